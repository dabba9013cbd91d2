#include "train/optimizer.h"

#include <cmath>

#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"

namespace iomm {

OptimConfig OptimConfig::from_config(Config& cfg, const std::string& p, int64_t total_steps) {
  OptimConfig c;
  c.lr = cfg.get_double(p + ".lr", c.lr, 0.0, 10.0);
  auto betas = cfg.get_double_list(p + ".betas", {c.beta1, c.beta2});
  if (betas.size() != 2 || betas[0] < 0 || betas[0] >= 1 || betas[1] < 0 || betas[1] >= 1)
    fail("config: {}.betas must be two numbers in [0, 1), e.g. [0.9, 0.95]", p);
  c.beta1 = betas[0];
  c.beta2 = betas[1];
  c.eps = cfg.get_double(p + ".eps", c.eps, 0.0, 1.0);
  c.weight_decay = cfg.get_double(p + ".weight_decay", c.weight_decay, 0.0, 10.0);
  c.grad_clip = cfg.get_double(p + ".grad_clip", c.grad_clip, 0.0);
  c.warmup_steps = cfg.get_int(p + ".warmup_steps", c.warmup_steps, 0);
  c.schedule = cfg.get_choice(p + ".schedule", c.schedule, {"constant", "cosine", "linear"});
  c.min_lr_ratio = cfg.get_double(p + ".min_lr_ratio", c.min_lr_ratio, 0.0, 1.0);
  c.total_steps = total_steps;
  c.name = cfg.get_choice(p + ".name", c.name, {"adamw", "muon"});
  c.muon_lr = cfg.get_double(p + ".muon_lr", c.muon_lr, 0.0, 10.0);
  c.muon_momentum = cfg.get_double(p + ".muon_momentum", c.muon_momentum, 0.0, 0.9999);
  c.muon_nesterov = cfg.get_bool(p + ".muon_nesterov", c.muon_nesterov);
  c.muon_ns_steps = cfg.get_int(p + ".muon_ns_steps", c.muon_ns_steps, 1, 100);
  return c;
}

double lr_at(const OptimConfig& c, int64_t step) {
  if (step < c.warmup_steps) return c.lr * double(step + 1) / double(c.warmup_steps);
  if (c.schedule == "constant") return c.lr;
  int64_t span = std::max<int64_t>(1, c.total_steps - c.warmup_steps);
  double progress = std::min(1.0, double(step - c.warmup_steps) / double(span));
  double factor = c.schedule == "cosine" ? 0.5 * (1.0 + std::cos(M_PI * progress)) : 1.0 - progress;
  return c.lr * (c.min_lr_ratio + (1.0 - c.min_lr_ratio) * factor);
}

double clip_grad_norm(const NamedTensors& params, double max_norm) {
  std::vector<at::Tensor> grads;
  for (auto& [name, p] : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return 0.0;
  // fp32 accumulation of the squared norms (torch.nn.utils.clip_grad_norm_ computes the same norm).
  auto norms = at::_foreach_norm(grads, 2);
  double total = at::stack(norms).to(at::kDouble).norm().item<double>();
  if (max_norm > 0 && std::isfinite(total) && total > max_norm) {
    double coef = max_norm / (total + 1e-6);
    at::_foreach_mul_(grads, coef);
  }
  return total;
}

// One fused AdamW call per (device, dtype) group: at::_fused_adamw_ is what torch.optim.AdamW(fused=True) runs,
// so the arithmetic is PyTorch's.
struct Optimizer::Impl {
  std::vector<bool> muon;                              // per parameter: updated by Muon
  std::vector<bool> owned;                             // per parameter: updated here (ZeRO-1 shards)
  std::vector<at::Tensor> exp_avg, exp_avg_sq, steps;  // AdamW state (undefined for Muon parameters)
  std::vector<at::Tensor> momentum;                    // Muon state (undefined for AdamW parameters)
};

at::Tensor newton_schulz5(const at::Tensor& g, int64_t steps) {
  const double a = 3.4445, b = -4.7750, c = 2.0315;
  bool tall = g.size(-2) > g.size(-1);
  auto x = tall ? g.mT() : g;
  x = x / (at::linalg_vector_norm(x, 2, {-2, -1}, /*keepdim=*/true) + 1e-7);
  for (int64_t i = 0; i < steps; ++i) {
    auto A = at::matmul(x, x.mT());
    auto B = b * A + at::matmul(c * A, A);  // the reference's `b * A + c * A @ A`, evaluated left to right
    x = a * x + at::matmul(B, x);
  }
  return tall ? x.mT() : x;
}

bool is_muon_parameter(const std::string& name, const at::Tensor& p) {
  if (p.dim() != 2) return false;
  // "embed" covers every embedding table and embedder (Z-Image's x/cap/t_embedder, InternVL's embed_tokens and
  // patch / position embeddings); "lm_head" the understanding model's output layer.
  for (const char* outer : {"img_in.", "txt_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer.", "embed",
                            "lm_head", "queries", "pad_token"})
    if (name.find(outer) != std::string::npos) return false;
  return true;
}

Optimizer::Optimizer(NamedTensors params, OptimConfig cfg)
    : impl_(std::make_unique<Impl>()), params_(std::move(params)), cfg_(std::move(cfg)) {
  for (auto& [name, p] : params_) {
    if (!p.requires_grad()) fail("optimizer: parameter {} does not require grad", name);
    bool muon = cfg_.name == "muon" && is_muon_parameter(name, p);
    impl_->muon.push_back(muon);
    impl_->owned.push_back(true);
    auto zeros = [&] { return at::zeros_like(p, at::MemoryFormat::Contiguous); };
    impl_->momentum.push_back(muon ? zeros() : at::Tensor());
    impl_->exp_avg.push_back(muon ? at::Tensor() : zeros());
    impl_->exp_avg_sq.push_back(muon ? at::Tensor() : zeros());
    impl_->steps.push_back(muon ? at::Tensor() : at::zeros({}, p.options().dtype(at::kFloat)));
  }
}

Optimizer::~Optimizer() = default;

void Optimizer::zero_grad() {
  for (auto& [name, p] : params_)
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
}

double Optimizer::step(int64_t step) {
  double norm = clip_grad_norm(params_, cfg_.grad_clip);
  if (!std::isfinite(norm)) {
    ++skipped_;
    ++skipped_in_a_row_;
    zero_grad();
    return norm;
  }
  skipped_in_a_row_ = 0;
  double lr = lr_at(cfg_, step);
  std::map<std::pair<int, int>, std::vector<size_t>> groups;  // (device index, dtype) -> params
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].second;
    if (!p.grad().defined() || impl_->muon[i] || !impl_->owned[i]) continue;
    groups[{int(p.device().type()) * 1000 + p.device().index(), int(p.scalar_type())}].push_back(i);
  }
  torch::NoGradGuard no_grad;
  muon_step(cfg_.lr > 0 ? cfg_.muon_lr * lr / cfg_.lr : 0.0);
  for (auto& [key, idx] : groups) {
    std::vector<at::Tensor> ps, gs, m, v, st;
    for (size_t i : idx) {
      ps.push_back(params_[i].second);
      gs.push_back(params_[i].second.grad());
      m.push_back(impl_->exp_avg[i]);
      v.push_back(impl_->exp_avg_sq[i]);
      st.push_back(impl_->steps[i]);
    }
    at::_foreach_add_(st, 1.0);  // the kernel reads the incremented step, as torch.optim's _fused_adamw does
    at::_fused_adamw_(ps, gs, m, v, {}, st, lr, cfg_.beta1, cfg_.beta2, cfg_.weight_decay, cfg_.eps,
                      /*amsgrad=*/false, /*maximize=*/false);
  }
  zero_grad();
  return norm;
}

// Keller Jordan's Muon (MuonWithAuxAdam) per hidden matrix: momentum ← lerp(momentum, g, 1 − β); the update is
// lerp(g, momentum, β) (Nesterov) or the momentum, orthogonalised, scaled by √max(1, rows / cols); decoupled weight
// decay at Muon's LR.
void Optimizer::muon_step(double lr) {
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].second;
    if (!impl_->muon[i] || !impl_->owned[i] || !p.grad().defined()) continue;
    auto g = p.grad();
    auto& m = impl_->momentum[i];
    m.lerp_(g, 1.0 - cfg_.muon_momentum);
    auto update = cfg_.muon_nesterov ? g.lerp(m, cfg_.muon_momentum) : m;
    update = newton_schulz5(update, cfg_.muon_ns_steps);
    update = update * std::sqrt(std::max(1.0, double(p.size(0)) / double(p.size(1))));
    p.mul_(1.0 - lr * cfg_.weight_decay);
    p.add_(update.to(p.scalar_type()), -lr);
  }
}

void Optimizer::fail_if_stuck(int64_t limit, const std::string& what, int64_t step, const std::string& kept) const {
  if (skipped_in_a_row_ < limit) return;
  fail("{}: {} steps in a row (to step {}) had a non-finite gradient norm and were skipped, so the model is not "
       "learning; nothing after the last saved state in {} was kept. Lower optim.lr, check the data and the model "
       "config, or raise train.max_skipped_in_a_row",
       what, skipped_in_a_row_, step, kept);
}

std::map<std::string, at::Tensor> Optimizer::state() const {
  std::map<std::string, at::Tensor> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!impl_->owned[i]) continue;
    for (auto& [key, t] : state_of(i)) out[key] = t;
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> Optimizer::state_of(size_t i) const {
  const auto& [name, p] = params_[i];
  auto get = [&](const at::Tensor& t, const at::Tensor& like) {
    return impl_->owned[i] ? t : at::zeros_like(like, at::MemoryFormat::Contiguous);
  };
  if (impl_->muon[i]) return {{name + ".momentum_buffer", get(impl_->momentum[i], p)}};
  auto step_like = at::zeros({}, p.options().dtype(at::kFloat));
  return {{name + ".exp_avg", get(impl_->exp_avg[i], p)},
          {name + ".exp_avg_sq", get(impl_->exp_avg_sq[i], p)},
          {name + ".step", get(impl_->steps[i], step_like)}};
}

void Optimizer::shard(const std::vector<bool>& owned) {
  if (owned.size() != params_.size())
    fail("optimizer: {} ownership flags for {} parameters", owned.size(), params_.size());
  impl_->owned = owned;
  for (size_t i = 0; i < owned.size(); ++i)
    if (!owned[i]) impl_->momentum[i] = impl_->exp_avg[i] = impl_->exp_avg_sq[i] = impl_->steps[i] = at::Tensor();
}

void Optimizer::load_state(const std::map<std::string, at::Tensor>& state, const std::string& source) {
  torch::NoGradGuard no_grad;
  auto take = [&](const std::string& key, at::Tensor& into) {
    auto it = state.find(key);
    if (it == state.end())
      fail("{}: optimizer state has no tensor {} (the checkpoint was written for other trainable parameters or "
           "another optim.name)",
           source, key);
    if (it->second.sizes() != into.sizes())
      fail("{}: optimizer state {} has shape {} but the parameter needs {}", source, key,
           fmt::join(it->second.sizes(), "x"), fmt::join(into.sizes(), "x"));
    into.copy_(it->second);
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& name = params_[i].first;
    if (!impl_->owned[i]) continue;
    if (impl_->muon[i]) {
      take(name + ".momentum_buffer", impl_->momentum[i]);
      continue;
    }
    take(name + ".exp_avg", impl_->exp_avg[i]);
    take(name + ".exp_avg_sq", impl_->exp_avg_sq[i]);
    take(name + ".step", impl_->steps[i]);
  }
}

Ema::Ema(const NamedTensors& params, double decay, bool on_cpu) : decay_(decay) {
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : params)
    shadow_[name] = p.detach().to(on_cpu ? c10::Device(c10::kCPU) : p.device(), at::kFloat).clone();
}

void Ema::update(const NamedTensors& params, double decay) {
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : params) {
    auto& s = shadow_.at(name);
    s.lerp_(p.detach().to(s.device(), at::kFloat), 1.0 - decay);
  }
}

double Ema::warmup_decay(int64_t n) const { return std::min(decay_, double(1 + n) / double(10 + n)); }

void Ema::load(const std::map<std::string, at::Tensor>& tensors, const std::string& source) {
  torch::NoGradGuard no_grad;
  for (auto& [name, s] : shadow_) {
    auto it = tensors.find(name);
    if (it == tensors.end()) fail("{}: EMA has no tensor {}", source, name);
    if (it->second.sizes() != s.sizes())
      fail("{}: EMA tensor {} has shape {} but the parameter needs {}", source, name,
           fmt::join(it->second.sizes(), "x"), fmt::join(s.sizes(), "x"));
    s.copy_(it->second);
  }
}

void Ema::copy_to(const NamedTensors& params) const {
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : params) p.copy_(shadow_.at(name));
}

}  // namespace iomm
