#include "train/optimizer.h"

#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "core/tensor_io.h"

using namespace iomm;

namespace {

// PyTorch's single-tensor AdamW (torch/optim/adamw.py, _single_tensor_adamw), written out in double precision.
void reference_adamw(at::Tensor p, const at::Tensor& g, at::Tensor m, at::Tensor v, int step, double lr, double b1,
                     double b2, double wd, double eps) {
  p.mul_(1 - lr * wd);
  m.mul_(b1).add_(g, 1 - b1);
  v.mul_(b2).addcmul_(g, g, 1 - b2);
  double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
  auto denom = (v.sqrt() / std::sqrt(bc2)).add_(eps);
  p.addcdiv_(m, denom, -lr / bc1);
}

}  // namespace

TEST(Optimizer, AdamWMatchesPyTorchFormula) {
  torch::manual_seed(0);
  auto w = torch::randn({5, 3}).requires_grad_(true);
  auto ref = w.detach().to(at::kDouble).clone();
  auto m = torch::zeros_like(ref), v = torch::zeros_like(ref);
  OptimConfig c;
  c.lr = 1e-2;
  c.weight_decay = 0.1;
  c.grad_clip = 0;
  Optimizer opt({{"w", w}}, c);
  for (int s = 0; s < 4; ++s) {
    auto g = torch::randn({5, 3});
    w.mutable_grad() = g.clone();
    opt.step(s);
    reference_adamw(ref, g.to(at::kDouble), m, v, s + 1, c.lr, c.beta1, c.beta2, c.weight_decay, c.eps);
    EXPECT_FALSE(w.grad().defined());
  }
  EXPECT_LT((w.detach().to(at::kDouble) - ref).abs().max().item<double>(), 1e-6);
  EXPECT_EQ(opt.state().at("w.step").item<float>(), 4.0f);
}

TEST(Optimizer, StateRoundTripGivesIdenticalUpdates) {
  torch::manual_seed(1);
  auto a = torch::randn({4}).requires_grad_(true);
  auto b = a.detach().clone().requires_grad_(true);
  OptimConfig c;
  c.lr = 0.05;
  Optimizer oa({{"p", a}}, c), ob({{"p", b}}, c);
  auto g1 = torch::randn({4}), g2 = torch::randn({4});
  a.mutable_grad() = g1.clone();
  oa.step(0);
  b.mutable_grad() = g1.clone();
  ob.step(0);
  // A fresh optimizer that loads ob's state continues exactly as oa does.
  Optimizer oc({{"p", b}}, c);
  std::map<std::string, at::Tensor> saved;
  for (auto& [k, t] : ob.state()) saved[k] = t.clone();
  oc.load_state(saved, "test");
  a.mutable_grad() = g2.clone();
  oa.step(1);
  b.mutable_grad() = g2.clone();
  oc.step(1);
  EXPECT_TRUE(torch::equal(a, b));
  saved.erase("p.exp_avg");
  EXPECT_THROW(oc.load_state(saved, "ckpt.safetensors"), Error);
}

TEST(Optimizer, LearningRateSchedules) {
  OptimConfig c;
  c.lr = 1.0;
  c.warmup_steps = 4;
  c.total_steps = 14;
  EXPECT_DOUBLE_EQ(lr_at(c, 0), 0.25);
  EXPECT_DOUBLE_EQ(lr_at(c, 3), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(c, 100), 1.0);
  c.schedule = "cosine";
  c.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(lr_at(c, 4), 1.0);
  EXPECT_NEAR(lr_at(c, 9), 0.1 + 0.9 * 0.5, 1e-12);  // half way
  EXPECT_NEAR(lr_at(c, 14), 0.1, 1e-12);
  c.schedule = "linear";
  EXPECT_NEAR(lr_at(c, 9), 0.1 + 0.9 * 0.5, 1e-12);
  EXPECT_NEAR(lr_at(c, 13), 0.1 + 0.9 * 0.1, 1e-12);
}

TEST(Optimizer, ClipGradNormScalesToMaxAndSkipsNonFinite) {
  auto w = torch::zeros({2}).requires_grad_(true);
  w.mutable_grad() = torch::tensor({3.0f, 4.0f});
  double n = clip_grad_norm({{"w", w}}, 1.0);
  EXPECT_NEAR(n, 5.0, 1e-6);
  EXPECT_NEAR(w.grad().norm().item<double>(), 1.0, 1e-5);
  OptimConfig c;
  Optimizer opt({{"w", w}}, c);
  w.mutable_grad() = torch::tensor({NAN, 1.0f});
  double bad = opt.step(0);
  EXPECT_FALSE(std::isfinite(bad));
  EXPECT_TRUE(torch::equal(w, torch::zeros({2})));  // skipped, weights untouched
}

TEST(Optimizer, EmaFollowsParameters) {
  auto w = torch::zeros({3}).requires_grad_(true);
  Ema ema({{"w", w}}, 0.9);
  {
    torch::NoGradGuard ng;
    w.fill_(1.0);
  }
  ema.update({{"w", w}});
  EXPECT_NEAR(ema.tensors().at("w")[0].item<double>(), 0.1, 1e-7);
  ema.update({{"w", w}});
  EXPECT_NEAR(ema.tensors().at("w")[0].item<double>(), 0.19, 1e-7);
  ema.copy_to({{"w", w}});
  EXPECT_NEAR(w[1].item<double>(), 0.19, 1e-7);
}

// train.ema_device = "cpu": the average lives in host memory, in fp32, and follows bf16 parameters on the
// training device (CUDA when this build has one) exactly as the on-device EMA does.
TEST(Optimizer, EmaOnTheCpuEqualsTheOnDeviceOne) {
  auto dev = torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  auto w = torch::randn({4, 3}, torch::TensorOptions().dtype(torch::kBFloat16).device(dev));
  Ema here({{"w", w}}, 0.9), host({{"w", w}}, 0.9, /*on_cpu=*/true);
  EXPECT_EQ(host.tensors().at("w").device().type(), torch::kCPU);
  EXPECT_EQ(host.tensors().at("w").scalar_type(), torch::kFloat);
  EXPECT_EQ(here.tensors().at("w").device(), dev);
  for (int i = 0; i < 3; ++i) {
    w.add_(0.5);
    here.update({{"w", w}});
    host.update({{"w", w}});
  }
  EXPECT_TRUE(torch::allclose(host.tensors().at("w"), here.tensors().at("w").cpu(), 1e-6, 1e-6));
  EXPECT_GT((host.tensors().at("w") - w.cpu().to(torch::kFloat)).abs().max().item<double>(), 0.1);  // it lags
  host.copy_to({{"w", w}});
  EXPECT_EQ(w.device(), dev);
  EXPECT_TRUE(torch::allclose(w.cpu().to(torch::kFloat), host.tensors().at("w"), 1e-2, 1e-2));  // bf16 rounding
}

TEST(Optimizer, FromConfigValidatesBetas) {
  auto cfg = Config::parse("[optim]\nlr = 3e-4\nbetas = [0.9, 0.99]\nschedule = \"cosine\"\n");
  auto c = OptimConfig::from_config(cfg, "optim", 100);
  EXPECT_DOUBLE_EQ(c.lr, 3e-4);
  EXPECT_DOUBLE_EQ(c.beta2, 0.99);
  EXPECT_EQ(c.schedule, "cosine");
  auto bad = Config::parse("[optim]\nbetas = [0.9]\n");
  EXPECT_THROW(OptimConfig::from_config(bad, "optim", 1), Error);
}

// Non-finite steps leave the weights alone and are counted; the run-in-a-row count resets on an applied step and
// fail_if_stuck stops at the limit with the fix in the message.
TEST(Optimizer, CountsSkippedStepsAndStopsWhenStuck) {
  auto w = torch::ones({3}).requires_grad_(true);
  OptimConfig cfg;
  cfg.lr = 0.1;
  Optimizer opt({{"w", w}}, cfg);
  auto step_with = [&](double g, int64_t s) {
    w.mutable_grad() = torch::full({3}, g);
    return opt.step(s);
  };
  EXPECT_FALSE(std::isfinite(step_with(NAN, 0)));
  EXPECT_FALSE(std::isfinite(step_with(INFINITY, 1)));
  EXPECT_TRUE(torch::equal(w.detach(), torch::ones({3})));
  EXPECT_EQ(opt.skipped(), 2);
  EXPECT_EQ(opt.skipped_in_a_row(), 2);
  EXPECT_NO_THROW(opt.fail_if_stuck(3, "test", 2, "somewhere"));
  try {
    opt.fail_if_stuck(2, "test", 2, "somewhere");
    ADD_FAILURE() << "expected fail_if_stuck to throw at the limit";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("optim.lr"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(std::isfinite(step_with(1.0, 2)));
  EXPECT_EQ(opt.skipped(), 2);
  EXPECT_EQ(opt.skipped_in_a_row(), 0);
  EXPECT_FALSE(torch::equal(w.detach(), torch::ones({3})));
}

// Muon against Keller Jordan's public reference (scripts/dump_muon_step.py -> tests/fixtures/muon_step.safetensors):
// 3 steps of Muon on the hidden matrices and torch.optim.AdamW on the rest, fp32, within 1e-5.
TEST(Optimizer, MuonMatchesThePyTorchReference) {
  auto path = std::string(IOMM_SOURCE_DIR) + "/tests/fixtures/muon_step.safetensors";
  safetensors::Checkpoint ck(path);
  auto t = load_tensors(ck);
  auto settings = nlohmann::json::parse(ck.metadata().at("optim"));
  auto muon_names = nlohmann::json::parse(ck.metadata().at("muon")).get<std::vector<std::string>>();
  OptimConfig c;
  c.name = "muon";
  c.lr = settings["lr"];
  c.muon_lr = settings["muon_lr"];
  c.beta1 = settings["betas"][0];
  c.beta2 = settings["betas"][1];
  c.eps = settings["eps"];
  c.weight_decay = settings["weight_decay"];
  c.muon_momentum = settings["muon_momentum"];
  c.muon_nesterov = settings["muon_nesterov"];
  c.muon_ns_steps = settings["muon_ns_steps"];
  c.grad_clip = 0;
  NamedTensors params;
  for (auto& [k, v] : t)
    if (k.rfind("param.", 0) == 0) params.push_back({k.substr(6), v.clone().requires_grad_(true)});
  for (auto& [name, p] : params)  // the split between Muon and AdamW is the reference's
    EXPECT_EQ(is_muon_parameter(name, p),
              std::find(muon_names.begin(), muon_names.end(), name) != muon_names.end()) << name;
  Optimizer opt(params, c);
  int steps = std::stoi(ck.metadata().at("steps"));
  for (int k = 0; k < steps; ++k) {
    for (auto& [name, p] : params) p.mutable_grad() = t.at(fmt::format("grad.{}.{}", k, name)).clone();
    opt.step(k);
    for (auto& [name, p] : params) {
      const auto& want = t.at(fmt::format("expected.{}.{}", k, name));
      EXPECT_LE((p.detach() - want).abs().max().item<double>(), 1e-5) << "step " << k << " " << name;
    }
  }
  for (auto name : {"language_model.model.embed_tokens.weight", "language_model.lm_head.weight",
                    "generator.all_x_embedder.2-1.weight", "generator.cap_embedder.1.weight"})
    EXPECT_FALSE(is_muon_parameter(name, torch::zeros({4, 4}))) << name;  // tables and outer layers stay AdamW
  EXPECT_TRUE(is_muon_parameter("language_model.model.layers.0.self_attn.q_proj.weight", torch::zeros({4, 4})));
  auto st = opt.state();  // Muon keeps a momentum buffer, AdamW its moments
  EXPECT_TRUE(st.count("generator.double_blocks.0.img_attn.qkv.weight.momentum_buffer"));
  EXPECT_FALSE(st.count("generator.double_blocks.0.img_attn.qkv.weight.exp_avg"));
  EXPECT_TRUE(st.count("generator.img_in.weight.exp_avg"));
}

TEST(Optimizer, NewtonSchulzOrthogonalises) {
  torch::manual_seed(0);
  for (auto shape : {std::vector<int64_t>{24, 40}, std::vector<int64_t>{40, 24}}) {
    auto x = newton_schulz5(torch::randn(shape), 5);
    auto s = at::linalg_svdvals(x);  // the quintic drives singular values into roughly [0.7, 1.2]
    EXPECT_GT(s.min().item<double>(), 0.5);
    EXPECT_LT(s.max().item<double>(), 1.3);
    EXPECT_EQ(x.sizes(), c10::IntArrayRef(shape));
  }
}
