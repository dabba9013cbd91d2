#include "train/optimizer.h"

#include <cmath>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"

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
  AdamW opt({{"w", w}}, c);
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
  AdamW oa({{"p", a}}, c), ob({{"p", b}}, c);
  auto g1 = torch::randn({4}), g2 = torch::randn({4});
  a.mutable_grad() = g1.clone();
  oa.step(0);
  b.mutable_grad() = g1.clone();
  ob.step(0);
  // A fresh optimizer that loads ob's state continues exactly as oa does.
  AdamW oc({{"p", b}}, c);
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
  AdamW opt({{"w", w}}, c);
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
  AdamW opt({{"w", w}}, cfg);
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
