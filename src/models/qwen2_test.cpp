#include <gtest/gtest.h>

#include <torch/torch.h>

#include "models/qwen2.h"
#include "models/weights.h"

using namespace iomm;

static Qwen2Config tiny() {
  Qwen2Config c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.rope_theta = 10000;
  return c;
}

static Qwen2Model tiny_model() {
  torch::manual_seed(0);
  Qwen2Model m(tiny());
  freeze(*m);
  return m;
}

TEST(Qwen2, PrefixKVCacheEqualsFullPass) {
  auto m = tiny_model();
  auto x = torch::randn({2, 11, 32});
  auto mask = torch::ones({2, 11}, torch::kLong);
  mask.index_put_({1, torch::indexing::Slice(0, 3)}, 0);  // left padding inside the prefix
  auto full = m->forward_embeds(x, mask).last_hidden_state;

  Qwen2Output prefix;
  {
    torch::NoGradGuard ng;
    prefix = m->forward_embeds(x.slice(1, 0, 7), mask.slice(1, 0, 7), {}, nullptr, /*use_cache=*/true);
  }
  auto rest = m->forward_embeds(x.slice(1, 7), mask.slice(1, 7), {}, &prefix.cache).last_hidden_state;
  auto err = (torch::cat({prefix.last_hidden_state, rest}, 1) - full).abs();
  EXPECT_LT(err.index({0}).max().item<double>(), 1e-5);
  EXPECT_LT(err.index({1}).slice(0, 3).max().item<double>(), 1e-5);  // real tokens of the padded row
}

TEST(Qwen2, GradientThroughContinuationEqualsFullPass) {
  auto m = tiny_model();
  auto x = torch::randn({2, 10, 32});
  auto w = torch::randn({2, 4, 32});
  // Full pass: only the last 4 positions' inputs require grad.
  auto q_full = x.slice(1, 6).clone().requires_grad_(true);
  auto full = m->forward_embeds(torch::cat({x.slice(1, 0, 6), q_full}, 1)).last_hidden_state.slice(1, 6);
  (full * w).sum().backward();
  // Prefix without grad + cached continuation with grad.
  Qwen2Output prefix;
  {
    torch::NoGradGuard ng;
    prefix = m->forward_embeds(x.slice(1, 0, 6), {}, {}, nullptr, true);
  }
  auto q = x.slice(1, 6).clone().requires_grad_(true);
  auto cont = m->forward_embeds(q, {}, {}, &prefix.cache).last_hidden_state;
  (cont * w).sum().backward();
  EXPECT_LT((cont - full).abs().max().item<double>(), 1e-5);
  EXPECT_LT((q.grad() - q_full.grad()).abs().max().item<double>(), 1e-5);
  EXPECT_GT(q.grad().abs().max().item<double>(), 0.0);
  // Frozen: no weight ever got a gradient.
  for (auto& p : m->parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST(Qwen2, FullyPaddedRowsStayFinite) {
  auto m = tiny_model();
  auto x = torch::randn({2, 5, 32}).requires_grad_(true);
  auto mask = torch::ones({2, 5}, torch::kLong);
  mask.index_put_({1}, 0);  // a row with no token at all
  auto h = m->forward_embeds(x, mask).last_hidden_state;
  h.sum().backward();
  EXPECT_TRUE(torch::isfinite(h).all().item<bool>());
  EXPECT_TRUE(torch::isfinite(x.grad()).all().item<bool>());
}

TEST(Qwen2, PositionIdsFromMask) {
  auto mask = torch::tensor({0, 0, 1, 1, 1}, torch::kLong).unsqueeze(0);
  auto pos = position_ids_from_mask(mask);
  EXPECT_TRUE(torch::equal(pos, torch::tensor({1, 1, 0, 1, 2}, torch::kLong).unsqueeze(0)));
  auto cont = position_ids_from_mask(torch::ones({1, 2}, torch::kLong), torch::tensor({3}, torch::kLong));
  EXPECT_TRUE(torch::equal(cont, torch::tensor({3, 4}, torch::kLong).unsqueeze(0)));
}
