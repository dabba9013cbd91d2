// Golden test of the training objective (issue 14): MIM keep-mask + RQA + frozen MLLM with the prefix KV cache +
// MM-DiT + flow-matching loss, its gradients and 10 AdamW steps, against tests/fixtures/iomm_step, written by
// scripts/dump_iomm_step.py from an independent PyTorch reference (transformers' InternVL on [c ; q] in one pass,
// the RQA from the paper's formula, diffusers' FluxTransformer2DModel). fp32 on the CPU.
#include <filesystem>
#include <regex>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/fs.h"
#include "core/tensor_io.h"
#include "model/iomm_model.h"
#include "testing/tiny_fixtures.h"
#include "train/optimizer.h"

using namespace iomm;
namespace fs = std::filesystem;

namespace {

const fs::path kFixture = fs::path(IOMM_SOURCE_DIR) / "tests" / "fixtures" / "iomm_step";

// Tolerances (fp32; the measured errors are printed): relative to the largest reference magnitude of a tensor.
constexpr double kLossRel = 1e-5;
constexpr double kGradRel = 1e-5, kGradAbs = 1e-10;  // the smallest max |g| here is ~1e-4
constexpr double kStepLossRel = 1e-5;

struct Golden {
  std::vector<ConditionInput> conds;
  at::Tensor images, keep, t, noise;
  std::map<std::string, at::Tensor> expected;
  OptimConfig optim;
  int64_t steps = 0;
};

ConditionInput condition(const nlohmann::json& j, const at::Tensor& image) {
  auto kind = j.at("kind").get<std::string>();
  if (kind == "image") return {ConditionKind::image, "", image};  // self-conditioning: the target image itself
  if (kind == "text") return {ConditionKind::text, j.at("text").get<std::string>(), {}};
  throw std::runtime_error("batch.json: unknown condition kind " + kind);
}

const Golden& golden() {
  static const Golden g = [] {
    Golden g;
    auto in = load_tensors((kFixture / "inputs.safetensors").string());
    g.images = in.at("images");
    g.keep = in.at("keep");
    g.t = in.at("t");
    g.noise = in.at("noise");
    g.expected = load_tensors((kFixture / "expected.safetensors").string());
    auto batch = nlohmann::json::parse(read_file((kFixture / "batch.json").string()));
    for (size_t i = 0; i < batch.at("conditions").size(); ++i)
      g.conds.push_back(condition(batch["conditions"][i], g.images[int64_t(i)]));
    const auto& o = batch.at("optim");
    g.optim.lr = o.at("lr");
    g.optim.beta1 = o.at("betas")[0];
    g.optim.beta2 = o.at("betas")[1];
    g.optim.eps = o.at("eps");
    g.optim.weight_decay = o.at("weight_decay");
    g.optim.grad_clip = o.at("grad_clip");  // schedule: constant, no warm-up (OptimConfig's defaults)
    g.steps = batch.at("adamw_steps");
    return g;
  }();
  return g;
}

// The fixture's model dir in a temp dir, with iomm.toml's mllm (relative to the fixture's model/) made absolute.
std::string model_dir() {
  auto dir = fs::path(fixtures::temp_dir("iomm_step")) / "model";
  fs::copy(kFixture / "model", dir, fs::copy_options::recursive);
  auto toml = read_file((dir / "iomm.toml").string());
  std::smatch m;
  if (!std::regex_search(toml, m, std::regex(R"(mllm = "([^"]*)\")")))
    throw std::runtime_error("iomm.toml has no mllm");
  auto mllm = (kFixture / "model" / m[1].str()).lexically_normal().string();
  write_file_atomic((dir / "iomm.toml").string(), m.prefix().str() + "mllm = " + nlohmann::json(mllm).dump() +
                                                      m.suffix().str());
  return dir.string();
}

// IommModel::load freezes the generator and adapter; training unfreezes them.
IommModel trainable_model() {
  auto m = IommModel::load(model_dir());
  m.unfreeze();
  return m;
}

// The objective as training runs it, with the fixture's keep-mask, t and noise.
FlowLoss objective(IommModel& m, const Golden& g) {
  auto unused = at::make_generator<at::CPUGeneratorImpl>(0);  // t, noise and the mask are given
  return m.loss({g.images, g.conds, g.keep, g.t, g.noise}, TimestepSampling{}, unused);
}

double max_abs(const at::Tensor& t) { return t.abs().max().item<double>(); }

double max_err(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

}  // namespace

TEST(IommStepGolden, ConditionMatchesTheOnePassReference) {
  const auto& g = golden();
  auto m = trainable_model();
  const auto& k = m.conditioner();
  auto toks = tokenize_conditions(g.conds, m.config().conditioner.templates, k.tokenizer, k.image_tokens_per_image(),
                                  k.pad_id);
  EXPECT_TRUE(torch::equal(toks.input_ids, g.expected.at("input_ids")));
  EXPECT_TRUE(torch::equal(toks.attention_mask, g.expected.at("attention_mask")));
  torch::NoGradGuard no_grad;
  auto h = m.condition(g.conds, /*mim=*/true, nullptr, g.keep).h;
  const auto& ref = g.expected.at("h");
  double err = max_err(h, ref), scale = max_abs(ref);
  fmt::print("h: max abs error {:.3e} (max |h| {:.3f})\n", err, scale);
  EXPECT_LE(err, 1e-5 * scale);
}

TEST(IommStepGolden, LossAndEveryGradientMatchTheReference) {
  const auto& g = golden();
  auto m = trainable_model();
  auto fl = objective(m, g);
  fl.loss.backward();
  double ref = g.expected.at("loss").item<double>(), loss = fl.loss.item<double>();
  fmt::print("loss {:.8f}, reference {:.8f}, relative error {:.3e}\n", loss, ref, std::abs(loss - ref) / ref);
  EXPECT_LE(std::abs(loss - ref), kLossRel * ref);

  // Per tensor: max abs error ≤ kGradRel · max |g_ref| + kGradAbs. Failures are listed in one message.
  size_t compared = 0;
  double worst = 0, worst_rel = 0;
  std::string worst_name, failed;
  for (auto& [name, p] : m.trainable()) {
    auto it = g.expected.find("grad." + name);
    ASSERT_NE(it, g.expected.end()) << name << " has no reference gradient";
    ASSERT_TRUE(p.grad().defined()) << name << " got no gradient";
    double scale = max_abs(it->second), err = max_err(p.grad(), it->second), bound = kGradRel * scale + kGradAbs;
    if (err > bound) failed += fmt::format("\n  {}: max abs error {:.3e}, max |g| {:.3e}", name, err, scale);
    worst_rel = std::max(worst_rel, err / scale);
    if (err / bound > worst) worst = err / bound, worst_name = name;
    ++compared;
  }
  EXPECT_TRUE(failed.empty()) << "gradients out of tolerance:" << failed;
  size_t in_fixture = 0;
  for (auto& [name, t] : g.expected) in_fixture += name.rfind("grad.", 0) == 0;
  EXPECT_EQ(compared, in_fixture) << "every reference gradient has a trainable parameter";
  fmt::print("{} gradients: max (abs error / max |g|) {:.3e}; worst error / bound {:.3f} ({})\n", compared, worst_rel,
             worst, worst_name);
}

TEST(IommStepGolden, TenAdamWStepsMatchTheReference) {
  const auto& g = golden();
  auto m = trainable_model();
  Optimizer opt(m.trainable(), g.optim);
  std::vector<float> losses, norms;
  for (int64_t k = 0; k < g.steps; ++k) {
    auto fl = objective(m, g);
    fl.loss.backward();
    norms.push_back(float(opt.step(k)));
    losses.push_back(fl.loss.item<float>());
  }
  {
    torch::NoGradGuard no_grad;
    losses.push_back(objective(m, g).loss.item<float>());
  }
  auto got = torch::tensor(losses), ref = g.expected.at("adamw_losses");
  auto rel = ((got - ref).abs() / ref.abs()).max().item<double>();
  auto norm_rel = ((torch::tensor(norms) - g.expected.at("adamw_grad_norms")).abs() /
                   g.expected.at("adamw_grad_norms")).max().item<double>();
  fmt::print("AdamW losses {} -> {}: max relative error {:.3e}; grad norms {:.3e}\n", losses.front(), losses.back(),
             rel, norm_rel);
  EXPECT_LE(rel, kStepLossRel);
  EXPECT_LE(norm_rel, kStepLossRel);
  EXPECT_LT(losses.back(), 0.8 * losses.front()) << "the LR makes the loss move";
}
