#include "model/iomm_model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "model/generator.h"
#include "testing/tiny_fixtures.h"
#include "testing/tiny_model_config.h"

using namespace iomm;

namespace {

IommModel tiny_model(uint64_t seed = 0, const std::string& extra = "") {
  auto cfg = Config::parse(fixtures::tiny_model_toml() + extra);
  return IommModel::create(IommModelConfig::from_config(cfg), seed);
}

std::vector<ConditionInput> conds() {
  torch::manual_seed(2);
  return {{ConditionKind::text, "a red circle", {}}, {ConditionKind::image, "", torch::rand({3, 16, 16}) * 2 - 1}};
}

}  // namespace

TEST(IommModel, ContextWidthFollowsTheMllmAndMismatchesFail) {
  auto m = tiny_model();
  EXPECT_EQ(m.config().generator.context_dim(), 32);
  EXPECT_EQ(m.image_seq_len(), 16);  // (16 / 4)^2
  // The resolved config records the width the model uses, without claiming the user set it.
  auto cfg = Config::parse(fixtures::tiny_model_toml());
  IommModelConfig::from_config(cfg);
  EXPECT_NE(cfg.dump_resolved().find("context_in_dim = 32"), std::string::npos) << cfg.dump_resolved();
  EXPECT_EQ(cfg.source().find("context_in_dim"), std::string::npos) << cfg.source();
  auto bad = Config::parse(fixtures::tiny_model_toml() + "");
  bad.set("generator.context_in_dim=64");
  EXPECT_THROW(IommModelConfig::from_config(bad), Error);
  auto no_mllm = Config::parse("[model]\nresolution = 16\n");
  EXPECT_THROW(IommModelConfig::from_config(no_mllm), Error);
}

TEST(IommModel, LossIsTheFlowMatchingObjective) {
  auto m = tiny_model();
  auto c = conds();
  auto images = torch::rand({2, 3, 16, 16}) * 2 - 1;
  auto cond = m.condition(c);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  auto t = torch::tensor({0.3f, 0.8f});
  auto z = torch::randn({2, 16, 48});
  // Keep every image token, so the training condition equals the inference one.
  auto keep = torch::ones({1, 4}, torch::kBool);  // one image condition, 4 tokens per tiny tile
  auto fl = m.loss({images, c, keep, t, z}, {}, gen);
  // Reference: x_t = (1 - t) x + t z, target z - x, on the 4x4-packed pixels.
  auto x = pack_latents(images, 4);
  auto xt = (1 - t.view({2, 1, 1})) * x + t.view({2, 1, 1}) * z;
  auto v = m.velocity(xt, t, cond);
  auto ref = (v - (z - x)).pow(2).mean({1, 2});
  EXPECT_LT((fl.per_sample - ref.detach()).abs().max().item<double>(), 1e-6);
  // adaLN-Zero: the untrained generator predicts 0, so the loss is E|z - x|^2.
  EXPECT_LT(v.abs().max().item<double>(), 1e-6);
  fl.loss.backward();
  int with_grad = 0;
  for (auto& [name, p] : m.trainable()) with_grad += p.grad().defined();
  EXPECT_GT(with_grad, 0);
}

TEST(IommModel, SaveLoadRoundTripAndDeterministicGeneration) {
  auto m = tiny_model(3);
  {
    torch::NoGradGuard ng;  // leave adaLN-Zero so the outputs depend on every weight
    for (auto& [name, p] : m.trainable()) p.add_(torch::randn_like(p) * 0.05);
  }
  auto dir = fixtures::temp_dir("model");
  m.save(dir);
  auto back = IommModel::load(dir);
  GenerateOptions o;
  o.steps = 3;
  o.cfg_scale = 2.0;
  auto a = m.generate(conds(), o), b = back.generate(conds(), o);
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{2, 3, 16, 16}));
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_LE(a.abs().max().item<double>(), 1.0);
  // Per-image seeds make an image independent of its batch.
  o.seeds = {5, 9};
  auto pair = m.generate(conds(), o);
  o.seeds = {9};
  auto single = m.generate({conds()[1]}, o);
  EXPECT_LT((pair[1] - single[0]).abs().max().item<double>(), 1e-5);
}

TEST(IommModel, ModelDirectoryStoresRelativePathsSoItMovesWithItsMllm) {
  namespace fs = std::filesystem;
  auto root = fixtures::temp_dir("movable");
  fs::create_directories(root + "/a");
  fs::copy(fixtures::tiny_mllm_dir(), root + "/a/mllm", fs::copy_options::recursive);
  auto toml = fixtures::tiny_model_toml();
  toml.replace(toml.find(fixtures::tiny_mllm_dir()), fixtures::tiny_mllm_dir().size(), root + "/a/mllm");
  auto cfg = Config::parse(toml);
  auto m = IommModel::create(IommModelConfig::from_config(cfg), 4);
  m.save(root + "/a/run/model");
  auto text = read_file(root + "/a/run/model/iomm.toml");
  EXPECT_NE(text.find("mllm = '../../mllm'"), std::string::npos) << text;
  fs::rename(root + "/a", root + "/b");  // the whole tree moves; no absolute path may point into /a
  auto back = IommModel::load(root + "/b/run/model");
  EXPECT_EQ(fs::path(back.config().mllm), (fs::path(root) / "b/mllm").lexically_normal());
  GenerateOptions o;
  o.steps = 2;
  EXPECT_TRUE(torch::equal(m.generate(conds(), o), back.generate(conds(), o)));
  fs::remove_all(root);
}

// The tiny world's pooled-condition option: FLUX's vector_in reads the mean of the condition states over their valid
// tokens, so the condition also modulates every block (adaLN); a saved model keeps it; a width other than the
// MLLM's is refused with the fix.
TEST(IommModel, PooledConditionFeedsVectorInTheMaskedMeanOfTheConditionStates) {
  auto h = torch::arange(24, torch::kFloat).view({2, 3, 4});
  auto mask = torch::tensor({{1, 1, 0}, {0, 0, 0}}).to(torch::kBool);
  auto pooled = pooled_condition(h, mask);
  EXPECT_TRUE(torch::allclose(pooled[0], (h[0][0] + h[0][1]) / 2));  // the padded third token is left out
  EXPECT_TRUE(torch::equal(pooled[1], torch::zeros({4})));             // no valid token: zeros, not NaN
  EXPECT_TRUE(torch::allclose(pooled_condition(h, {}), h.mean(1)));

  auto cfg = Config::parse(fixtures::tiny_model_toml());
  cfg.set("generator.vec_in_dim=32");
  auto m = IommModel::create(IommModelConfig::from_config(cfg), 6);
  auto names = m.trainable();
  auto vec = std::find_if(names.begin(), names.end(),
                          [](const auto& p) { return p.first == "generator.vector_in.out_layer.weight"; });
  ASSERT_NE(vec, names.end());
  {
    torch::NoGradGuard ng;  // away from adaLN-Zero, so the modulation carries the pooled vector
    torch::manual_seed(7);
    for (auto& [name, p] : names) p.add_(torch::randn_like(p) * 0.05);
  }
  torch::manual_seed(8);
  std::vector<ConditionInput> c = {{ConditionKind::text, "a red circle", {}}};
  auto x = torch::randn({1, 16, 48});
  auto t = torch::tensor({0.5f});
  auto a = m.velocity(x, t, m.condition(c));
  auto dir = fixtures::temp_dir("pooled");
  m.save(dir);
  auto back = IommModel::load(dir);
  EXPECT_TRUE(torch::allclose(back.velocity(x, t, back.condition(c)), a, 1e-6, 1e-6));
  {
    torch::NoGradGuard ng;
    vec->second.zero_();  // cut the pooled path: the output must change
  }
  EXPECT_FALSE(torch::allclose(m.velocity(x, t, m.condition(c)), a, 1e-4, 1e-4));

  auto bad = Config::parse(fixtures::tiny_model_toml());
  bad.set("generator.vec_in_dim=16");
  try {
    IommModelConfig::from_config(bad);
    FAIL() << "a pooled vector narrower than the MLLM was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vec_in_dim = 16"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("set it to 32"), std::string::npos) << e.what();
  }
}

// IOMM-XL's generator (Z-Image's S3-DiT) behind the same model: the objective back-propagates into it and the
// adapter, a saved model (diffusers names under generator/) loads back to the same samples.
TEST(IommModel, ZImageGeneratorTrainsSavesAndSamples) {
  auto cfg = Config::parse(fixtures::tiny_zimage_model_toml());
  auto m = IommModel::create(IommModelConfig::from_config(cfg), 5);
  EXPECT_EQ(m.config().generator.arch, "zimage");
  EXPECT_EQ(m.config().generator.context_dim(), 32);  // cap_feat_dim follows the MLLM's width
  {
    torch::NoGradGuard ng;  // leave the zero-initialised final layer so the output depends on every weight
    for (auto& [name, p] : m.trainable()) p.add_(torch::randn_like(p) * 0.05);
  }
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto images = torch::rand({2, 3, 16, 16}) * 2 - 1;
  auto fl = m.loss({images, conds()}, {}, gen);
  fl.loss.backward();
  int generator_grads = 0, adapter_grads = 0;
  for (auto& [name, p] : m.trainable()) {
    bool nonzero = p.grad().defined() && p.grad().abs().sum().item<double>() > 0;
    ASSERT_TRUE(!p.grad().defined() || torch::isfinite(p.grad()).all().item<bool>()) << name;
    (name.rfind("generator.", 0) == 0 ? generator_grads : adapter_grads) += nonzero;
  }
  EXPECT_GT(generator_grads, 10);
  EXPECT_GT(adapter_grads, 0);
  auto dir = fixtures::temp_dir("zimage-model");
  m.save(dir);
  EXPECT_TRUE(std::filesystem::exists(dir + "/generator/diffusion_pytorch_model.safetensors"));
  auto back = IommModel::load(dir);
  GenerateOptions o;
  o.steps = 2;
  EXPECT_TRUE(torch::equal(m.generate(conds(), o), back.generate(conds(), o)));
  std::filesystem::remove_all(dir);
}

TEST(IommModel, GenerateRefusesOptionsThatCannotGiveAnImage) {
  auto error_of = [](const GenerateOptions& o) {
    try {
      check_generate_options(o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  const double nan = std::nan(""), inf = INFINITY;
  for (double cfg : {nan, inf, -inf}) {
    GenerateOptions o;
    o.cfg_scale = cfg;
    EXPECT_NE(error_of(o).find("guidance scale (cfg, --cfg)"), std::string::npos) << cfg << ": " << error_of(o);
  }
  for (double shift : {0.0, -1.0, nan, inf}) {
    GenerateOptions o;
    o.shift = shift;
    EXPECT_NE(error_of(o).find("time shift (shift, --shift)"), std::string::npos) << shift << ": " << error_of(o);
  }
  GenerateOptions fine;
  fine.cfg_scale = 0;  // unconditional: odd but an image
  fine.shift = 3;
  EXPECT_EQ(error_of(fine), "<no error>");
  // generate() checks too (the trainer's samples and the apps call it without the CLI): nan used to give black.
  GenerateOptions bad;
  bad.steps = 1;
  bad.cfg_scale = nan;
  auto m = tiny_model();
  EXPECT_THROW(m.generate({{ConditionKind::text, "a red circle", {}}}, bad), Error);
}

TEST(IommModel, ConcatConditionsPadsTheShorter) {
  Condition a{torch::ones({1, 2, 4}), torch::ones({1, 2}, torch::kBool)};
  Condition b{torch::ones({2, 3, 4}), torch::ones({2, 3}, torch::kBool)};
  auto c = concat_conditions(a, b);
  EXPECT_EQ(c.h.sizes(), (std::vector<int64_t>{3, 3, 4}));
  EXPECT_FALSE(c.mask[0][2].item<bool>());
  EXPECT_EQ(c.h[0][2].abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(c.mask[2].all().item<bool>());
}
