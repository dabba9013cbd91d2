// Generation (text-to-image, reconstruction from a self-condition, zero-shot editing): Euler or DPM-Solver++(2M) on
// the PF-ODE from t = 1 to 0, with true classifier-free guidance against the unconditional prompt (two NFEs per
// step, batched). The sampler is diffusion/flow_matching.h's, given the model as a velocity callback.
#include <cmath>

#include <torch/torch.h>

#include "core/error.h"
#include "model/iomm_model.h"

namespace iomm {

Condition IommModel::condition(const std::vector<ConditionInput>& conds, bool mim, at::Generator* gen,
                               const at::Tensor& keep) {
  auto cond = conditioner_->forward(conds, mim, gen, keep);
  cond.h = cond.h.to(dtype_from_name(config_.dtype));  // the generator's dtype; the frozen MLLM may be bf16
  return cond;
}

at::Tensor IommModel::velocity(const at::Tensor& x_tokens, const at::Tensor& t, const Condition& cond) {
  int64_t side = latent_side();
  auto tt = t.to(x_tokens.device(), x_tokens.scalar_type());
  auto out = generator_->forward(x_tokens, tt, cond.h, cond.mask, side, side);
  if (config_.prediction == "velocity") return out;
  // x-prediction: v = (x_t − x̂) / t, since x_t = (1 − t)x + t·z.
  return (x_tokens - out) / tt.clamp_min(config_.prediction_t_min).view({-1, 1, 1});
}

Condition concat_conditions(const Condition& a, const Condition& b) {
  int64_t L = std::max(a.h.size(1), b.h.size(1));
  auto pad = [L](const Condition& c) {
    int64_t extra = L - c.h.size(1);
    if (extra == 0) return c;
    return Condition{torch::constant_pad_nd(c.h, {0, 0, 0, extra}),
                     torch::constant_pad_nd(c.mask.to(torch::kBool), {0, extra}, 0).to(torch::kBool)};
  };
  auto pa = pad(a), pb = pad(b);
  return {torch::cat({pa.h, pb.h}, 0), torch::cat({pa.mask.to(torch::kBool), pb.mask.to(torch::kBool)}, 0)};
}

namespace {

// Image i's noise comes from its own seed, so an image does not depend on the batch it is generated in.
at::Tensor initial_noise(const GenerateOptions& o, int64_t B, int64_t C, int64_t side) {
  if (!o.seeds.empty() && int64_t(o.seeds.size()) != B)
    fail("generate: {} seeds for {} conditions", o.seeds.size(), B);
  std::vector<at::Tensor> noises;
  for (int64_t i = 0; i < B; ++i) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seeds.empty() ? o.seed + uint64_t(i) : o.seeds[size_t(i)]);
    noises.push_back(at::randn({C, side, side}, gen, torch::TensorOptions().dtype(torch::kFloat)));
  }
  return torch::stack(noises);
}

}  // namespace

void check_generate_options(const GenerateOptions& o) {
  if (!std::isfinite(o.cfg_scale))
    fail("generate: the guidance scale (cfg, --cfg) is {}; give a finite number (1 = no guidance, 4.5 = the "
         "default)",
         o.cfg_scale);
  if (!std::isfinite(o.shift) || o.shift <= 0)
    fail("generate: the time shift (shift, --shift) is {}; give a finite number > 0 (1 = no shift, as trained)",
         o.shift);
  if (o.steps < 1) fail("generate: steps (--steps) is {}; give at least 1 sampling step (20 = the default)", o.steps);
}

at::Tensor IommModel::generate(const std::vector<ConditionInput>& conds, const GenerateOptions& o,
                               const GenerateCallback& on_step) {
  check_generate_options(o);
  torch::NoGradGuard no_grad;
  generator_->module().eval();
  auto p = generator_->module().parameters().front();
  Condition cond = condition(conds);
  bool guided = o.cfg_scale != 1.0;
  if (guided) {
    std::vector<ConditionInput> un(conds.size(), ConditionInput{ConditionKind::uncond, "", {}});
    cond = concat_conditions(cond, condition(un));
  }
  int64_t side = latent_side(), patch = config_.generator.patch_size();
  auto noise = initial_noise(o, int64_t(conds.size()), autoencoder_->latent_channels(), side);
  auto x = pack_latents(noise, patch).to(p.device(), p.scalar_type());
  VelocityFn fn = [&](const at::Tensor& xt, double sigma) {
    auto t = torch::full({xt.size(0)}, sigma, xt.options());
    return velocity(xt, t, cond);
  };
  if (guided) fn = classifier_free_guidance(fn, o.cfg_scale);
  auto sched = static_shift_schedule(o.steps, o.shift);
  auto out = sample_flow(o.sampler, fn, x, sched.sigmas, on_step);
  return autoencoder_->decode(unpack_latents(out, side, side, patch).to(frozen_dtype())).to(torch::kFloat).clamp(-1, 1);
}

at::Tensor IommModel::decode_preview(const at::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  int64_t side = latent_side();
  auto lat = unpack_latents(tokens, side, side, config_.generator.patch_size());
  return (autoencoder_->decode(lat.to(frozen_dtype())).to(torch::kFloat).clamp(-1, 1) + 1) / 2;
}

}  // namespace iomm
