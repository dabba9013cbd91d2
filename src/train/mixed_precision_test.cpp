// bf16 autocast on the CPU (issue 15's precision acceptance): the forward really runs in bf16 inside the scope and
// not after it; the master weights, their gradients and the AdamW state stay fp32; 50 steps of the tiny model track
// the fp32 losses within 2%; autocast with bf16 master weights is refused. model.frozen_dtype holds the frozen MLLM
// and autoencoder in bf16 beside fp32 masters, with or without autocast, in training and in sampling.
#include "train/mixed_precision.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/config.h"
#include "model/iomm_model.h"
#include "testing/tiny_model_config.h"
#include "train/optimizer.h"
#include "train/trainer.h"

using namespace iomm;

namespace {

// 50 AdamW steps of the tiny model on one fixed batch; returns the losses and leaves `m` trained.
std::vector<double> train_steps(IommModel& m, const std::string& autocast, Optimizer& opt, int steps) {
  torch::manual_seed(1);
  TrainingBatch b;
  b.images = torch::rand({4, 3, 16, 16}) * 2 - 1;
  for (int64_t i = 0; i < 4; ++i)
    b.conds.push_back(i % 2 ? ConditionInput{ConditionKind::text, "a red circle", {}}
                            : ConditionInput{ConditionKind::image, "", b.images[i]});
  TimestepSampling ts;
  std::vector<double> losses;
  m.set_training(true);
  for (int s = 0; s < steps; ++s) {
    auto gen = step_generator(0, s, 0);
    FlowLoss fl;
    {
      AutocastScope scope("cpu", autocast);
      fl = m.loss(b, ts, gen);
    }
    EXPECT_EQ(fl.loss.scalar_type(), torch::kFloat);  // the loss is reduced in fp32
    fl.loss.backward();
    for (auto& [name, p] : m.trainable())
      if (p.grad().defined()) EXPECT_EQ(p.grad().scalar_type(), torch::kFloat) << name;
    losses.push_back(fl.loss.item<double>());
    opt.step(s);
  }
  return losses;
}

IommModel tiny(uint64_t seed, std::string toml = fixtures::tiny_model_toml()) {
  auto cfg = Config::parse(toml);
  auto m = IommModel::create(IommModelConfig::from_config(cfg), seed);
  torch::NoGradGuard g;  // non-trivial generator weights, so the forward's precision shows in the loss
  torch::manual_seed(seed);
  for (auto& [name, p] : m.trainable())
    if (p.dim() >= 2) p.normal_(0.0, std::pow(double(p[0].numel()), -0.5));
  return m;
}

}  // namespace

TEST(MixedPrecision, ScopeTurnsCpuAutocastOnAndRestoresIt) {
  auto a = torch::randn({4, 8}), w = torch::randn({8, 3});
  {
    AutocastScope scope("cpu", "bfloat16");
    EXPECT_EQ(torch::matmul(a, w).scalar_type(), torch::kBFloat16);
    {
      AutocastScope none("cpu", "none");  // a no-op scope leaves it on
      EXPECT_EQ(torch::matmul(a, w).scalar_type(), torch::kBFloat16);
    }
  }
  EXPECT_EQ(torch::matmul(a, w).scalar_type(), torch::kFloat);
}

TEST(MixedPrecision, Bf16AutocastTracksFp32WithFp32MasterState) {
  OptimConfig oc;
  oc.lr = 1e-3;
  auto fp32 = tiny(3);
  Optimizer opt32(fp32.trainable(), oc);
  auto ref = train_steps(fp32, "none", opt32, 50);
  auto mixed = tiny(3);
  Optimizer opt16(mixed.trainable(), oc);
  auto got = train_steps(mixed, "bfloat16", opt16, 50);
  double worst = 0, differs = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    worst = std::max(worst, std::abs(got[i] - ref[i]) / ref[i]);
    differs += got[i] != ref[i];
  }
  EXPECT_LE(worst, 0.02) << "largest relative loss difference over 50 steps";
  EXPECT_GT(differs, 40);  // bf16 really ran: the losses are not the fp32 ones
  for (auto& [name, p] : mixed.trainable()) EXPECT_EQ(p.scalar_type(), torch::kFloat) << name;
  for (auto& [name, t] : opt16.state())
    if (t.is_floating_point() && t.numel() > 1) EXPECT_EQ(t.scalar_type(), torch::kFloat) << name;
  RecordProperty("worst_relative_loss_difference", std::to_string(worst));
}

TEST(MixedPrecision, AutocastNeedsFp32MasterWeights) {
  auto cfg = Config::parse("[train]\nautocast = \"bfloat16\"\n");
  EXPECT_EQ(autocast_from_config(cfg, "float32"), "bfloat16");
  try {
    autocast_from_config(cfg, "bfloat16");
    FAIL() << "bf16 master weights accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("model.dtype"), std::string::npos) << e.what();
  }
  auto bad = Config::parse("[train]\nautocast = \"float16\"\n");
  EXPECT_THROW(autocast_from_config(bad, "float32"), std::exception);  // no loss scaling: not offered
}

namespace {

// The tiny model over a tiny FLUX autoencoder, with model.frozen_dtype when given.
std::string flux_toml(const std::string& frozen_dtype) {
  static const std::string ae = fixtures::tiny_flux_ae_dir(0);
  auto toml = fixtures::tiny_flux_model_toml(ae);
  if (!frozen_dtype.empty()) toml.replace(0, 8, "[model]\nfrozen_dtype = \"" + frozen_dtype + "\"\n");
  return toml;
}

}  // namespace

TEST(MixedPrecision, FrozenModelsHeldInBf16BesideFp32Masters) {
  auto cfg = Config::parse(flux_toml("bfloat16"));
  auto mc = IommModelConfig::from_config(cfg);
  EXPECT_NE(mc.resolved_toml.find("frozen_dtype = 'bfloat16'"), std::string::npos) << mc.resolved_toml;
  auto dflt = Config::parse(flux_toml(""));
  EXPECT_EQ(IommModelConfig::from_config(dflt).frozen_dtype, "float32");  // default: model.dtype

  auto mixed = tiny(3, flux_toml("bfloat16"));
  for (const auto& p : mixed.conditioner().mllm->parameters()) ASSERT_EQ(p.scalar_type(), torch::kBFloat16);
  auto f = mixed.encode_features(torch::rand({1, 3, 16, 16}) * 2 - 1);
  EXPECT_EQ(f.latents.scalar_type(), torch::kBFloat16);  // the autoencoder ran in bf16
  EXPECT_EQ(f.c_img.scalar_type(), torch::kBFloat16);
  auto rqa_before = mixed.trainable().back().second.clone();

  OptimConfig oc;
  oc.lr = 1e-3;
  auto fp32 = tiny(3, flux_toml(""));
  Optimizer opt32(fp32.trainable(), oc);
  auto ref = train_steps(fp32, "none", opt32, 20);
  Optimizer opt16(mixed.trainable(), oc);
  auto got = train_steps(mixed, "bfloat16", opt16, 20);  // asserts fp32 gradients on every trainable tensor
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::abs(got[i] - ref[i]) / ref[i]);
  EXPECT_LE(worst, 0.02) << "largest relative loss difference over 20 steps";  // measured 0.0009
  EXPECT_GT(worst, 0.0);  // the frozen parts really ran in bf16
  for (auto& [name, p] : mixed.trainable()) EXPECT_EQ(p.scalar_type(), torch::kFloat) << name;
  ASSERT_NE(mixed.trainable().back().first.find("conditioner.rqa."), std::string::npos);
  EXPECT_FALSE(torch::equal(rqa_before, mixed.trainable().back().second))  // gradients crossed the bf16 MLLM
      << mixed.trainable().back().first;
  RecordProperty("worst_relative_loss_difference", std::to_string(worst));
}

TEST(MixedPrecision, FrozenBf16WithoutAutocastTrainsAndSamples) {
  auto m = tiny(3, flux_toml("bfloat16"));  // every cast between the frozen and the trained parts is explicit
  OptimConfig oc;
  Optimizer opt(m.trainable(), oc);
  auto losses = train_steps(m, "none", opt, 2);
  for (double l : losses) EXPECT_TRUE(std::isfinite(l));
  m.set_training(false);
  torch::NoGradGuard g;
  GenerateOptions o;
  o.steps = 2;
  auto img = m.generate({ConditionInput{ConditionKind::text, "a red circle", {}}}, o);
  EXPECT_EQ(img.scalar_type(), torch::kFloat);
  EXPECT_EQ(img.sizes(), (std::vector<int64_t>{1, 3, 16, 16}));
  EXPECT_TRUE(torch::isfinite(img).all().item<bool>());
}
