#include "models/detail_head.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "model/iomm_model.h"
#include "testing/tiny_fixtures.h"
#include "testing/tiny_model_config.h"

using namespace iomm;

namespace {

DetailHead fresh_head(int64_t c = 3, int64_t ch = 8) {
  DetailHead h(c, ch);
  h->init_weights(0);
  return h;
}

IommModel tiny_model(const std::string& set = "") {
  auto cfg = Config::parse(fixtures::tiny_model_toml());
  if (!set.empty()) cfg.set(set);
  return IommModel::create(IommModelConfig::from_config(cfg), 3);
}

}  // namespace

TEST(DetailHead, StartsAsTheIdentityOfTheGeneratorOutputAndKeepsTheShape) {
  auto h = fresh_head();
  torch::manual_seed(1);
  auto out = torch::randn({2, 3, 8, 8}), xt = torch::randn({2, 3, 8, 8});
  auto y = h->forward(out, xt, torch::tensor({0.2f, 0.9f}));
  EXPECT_EQ(y.sizes(), out.sizes());
  EXPECT_TRUE(torch::equal(y, out));  // zero conv_out: exactly the DiT's output
  EXPECT_THROW(h->forward(out, torch::randn({2, 3, 4, 4}), torch::tensor({0.2f, 0.9f})), Error);
  EXPECT_THROW(h->forward(torch::randn({2, 4, 8, 8}), torch::randn({2, 4, 8, 8}), torch::tensor({0.2f, 0.9f})), Error);
}

TEST(DetailHead, GradientsReachConvOutAtOnceAndTheHiddenConvsAfterOneStep) {
  auto h = fresh_head();
  torch::manual_seed(2);
  auto out = torch::randn({2, 3, 8, 8}, torch::requires_grad()), xt = torch::randn({2, 3, 8, 8});
  auto t = torch::tensor({0.3f, 0.7f});
  auto target = torch::randn({2, 3, 8, 8});
  (h->forward(out, xt, t) - target).pow(2).mean().backward();
  EXPECT_GT(h->conv_out->weight.grad().abs().sum().item<double>(), 0.0);
  EXPECT_GT(out.grad().abs().sum().item<double>(), 0.0);  // the DiT behind it still trains
  // conv_out = 0 blocks the path to the hidden convolutions at the first step only.
  EXPECT_EQ(h->conv_in->weight.grad().abs().sum().item<double>(), 0.0);
  {
    torch::NoGradGuard ng;
    h->conv_out->weight.sub_(h->conv_out->weight.grad() * 0.1);
  }
  h->zero_grad();
  (h->forward(out, xt, t) - target).pow(2).mean().backward();
  EXPECT_GT(h->conv_in->weight.grad().abs().sum().item<double>(), 0.0);
  EXPECT_GT(h->conv_mid->weight.grad().abs().sum().item<double>(), 0.0);
}

TEST(DetailHead, TheGeneratorWithAFreshHeadEqualsTheGeneratorWithoutAndSavesIt) {
  auto plain = tiny_model();
  auto headed = tiny_model("generator.detail_head_channels=8");
  auto names = headed.trainable();
  auto has = [&](const std::string& n) {
    return std::any_of(names.begin(), names.end(), [&](const auto& p) { return p.first == n; });
  };
  EXPECT_TRUE(has("generator.detail_head.conv_out.weight"));
  EXPECT_TRUE(has("generator.detail_head.conv_in.weight"));
  EXPECT_EQ(headed.generator_parameters() - plain.generator_parameters(), (7 * 8 + 8 * 8 + 8 * 3) * 9 + 8 + 8 + 3);
  {
    torch::NoGradGuard ng;  // the same DiT weights in both, away from adaLN-Zero's zero map
    torch::manual_seed(4);
    auto pn = plain.trainable();
    for (auto& [name, p] : pn) {
      p.copy_(torch::randn_like(p) * 0.05);
      for (auto& [n2, q] : names)
        if (n2 == name) q.copy_(p);
    }
  }
  torch::manual_seed(5);
  std::vector<ConditionInput> conds = {{ConditionKind::text, "a red circle", {}}};
  auto x = torch::randn({1, 16, 48});
  auto t = torch::tensor({0.5f});
  auto a = plain.velocity(x, t, plain.condition(conds)), b = headed.velocity(x, t, headed.condition(conds));
  EXPECT_TRUE(torch::allclose(a, b, 1e-6, 1e-6));
  {
    torch::NoGradGuard ng;  // a trained head changes the output, and the saved model keeps it
    for (auto& [n, p] : names)
      if (n.find("detail_head.") != std::string::npos) p.add_(torch::randn_like(p) * 0.1);
  }
  auto c = headed.velocity(x, t, headed.condition(conds));
  EXPECT_FALSE(torch::allclose(a, c, 1e-4, 1e-4));
  auto dir = fixtures::temp_dir("headed");
  headed.save(dir);
  auto back = IommModel::load(dir);
  EXPECT_TRUE(torch::allclose(back.velocity(x, t, back.condition(conds)), c, 1e-6, 1e-6));
}

TEST(DetailHead, IsAnMMDiTOptionOnly) {
  auto cfg = Config::parse(fixtures::tiny_model_toml());
  cfg.set("generator.detail_head_channels=-1");
  EXPECT_THROW(IommModelConfig::from_config(cfg), Error);
  auto zimage = Config::parse(fixtures::tiny_model_toml());
  zimage.set("generator.arch=\"zimage\"");
  zimage.set("generator.detail_head_channels=8");
  try {
    IommModelConfig::from_config(zimage);
    ADD_FAILURE() << "a Z-Image generator accepted a detail head";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("detail_head_channels"), std::string::npos) << e.what();
  }
}
