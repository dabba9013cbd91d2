#include <gtest/gtest.h>

#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "models/name_conversion.h"
#include "models/weights.h"
#include "models/zimage_dit.h"

using namespace iomm;

namespace {

ZImageConfig tiny_config() {
  ZImageConfig c;
  c.in_channels = 4;
  c.dim = 64;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.n_layers = 2;
  c.n_refiner_layers = 2;
  c.cap_feat_dim = 24;
  c.axes_dims = {8, 12, 12};
  c.axes_lens = {256, 64, 64};
  return c;
}

// Random (not zero-gated) weights so that every path carries signal.
ZImageDiT random_model(const ZImageConfig& c, uint64_t seed, torch::Dtype dt = torch::kFloat32) {
  ZImageDiT m(c, torch::TensorOptions().dtype(dt));
  torch::NoGradGuard g;
  torch::manual_seed(seed);
  for (auto& p : m->named_parameters()) {
    if (p.key().find("norm") != std::string::npos) p.value().uniform_(0.5, 1.5);
    else p.value().normal_(0.0, 0.2);
  }
  return m;
}

ZImageInput random_input(const ZImageConfig& c, int64_t B, int64_t L, uint64_t seed,
                         torch::Dtype dt = torch::kFloat32) {
  torch::manual_seed(seed);
  ZImageInput in;
  in.x = torch::randn({B, c.in_channels, 8, 6}, torch::dtype(dt));
  in.t = torch::rand({B}, torch::dtype(dt));
  in.cap_feats = torch::randn({B, L, c.cap_feat_dim}, torch::dtype(dt));
  return in;
}

}  // namespace

TEST(ZImage, ParameterCountOfTheXLConfig) {
  auto cfg = Config::load(std::string(IOMM_SOURCE_DIR) + "/configs/model/iomm-xl.toml");
  auto c = ZImageConfig::from_config(cfg, "generator");
  cfg.check_unused("generator");
  ZImageDiT m(c, torch::TensorOptions().device(torch::kMeta));
  EXPECT_TRUE(m->x_pad_token.is_meta());
  int64_t n = count_parameters(*m);
  EXPECT_EQ(n, zimage_parameter_count(c));
  // Closed form: per modulated block 4D² (attn) + 3·D·F (SwiGLU) + 4D (sandwich norms) + 2h (qk norms) + 256·4D + 4D.
  int64_t D = c.dim, F = c.ffn_hidden(), h = c.head_dim(), Cc = c.cap_feat_dim, P = c.patch_dim();
  int64_t plain = 4 * D * D + 3 * D * F + 4 * D + 2 * h, mod = plain + 256 * 4 * D + 4 * D;
  int64_t formula = (c.n_layers + c.n_refiner_layers) * mod + c.n_refiner_layers * plain + (P * D + D) +
                    (D * P + P + 256 * D + D) + (256 * 1024 + 1024 + 1024 * 256 + 256) + (Cc + Cc * D + D) + 2 * D;
  EXPECT_EQ(n, formula);
  EXPECT_EQ(F, 10240);
  // research/backbone.md §4: 6,150,975,552 with cap_feat_dim 1536 (6,154,908,736 with Z-Image's 2560).
  EXPECT_EQ(n, 6150975552LL);
  EXPECT_GE(n, 6000000000LL);
  EXPECT_LE(n, 6300000000LL);
  c.cap_feat_dim = 2560;
  EXPECT_EQ(zimage_parameter_count(c), 6154908736LL);
}

TEST(ZImage, ModuleNamesAreDiffusers) {
  ZImageDiT m(tiny_config(), torch::TensorOptions().device(torch::kMeta));
  auto params = m->named_parameters();
  for (const char* n : {"all_x_embedder.2-1.weight", "all_final_layer.2-1.adaLN_modulation.1.weight",
                        "all_final_layer.2-1.linear.bias", "t_embedder.mlp.0.weight", "t_embedder.mlp.2.bias",
                        "cap_embedder.0.weight", "cap_embedder.1.weight", "x_pad_token", "cap_pad_token",
                        "noise_refiner.1.adaLN_modulation.0.weight", "context_refiner.0.attention.to_out.0.weight",
                        "layers.1.attention.norm_k.weight", "layers.0.feed_forward.w3.weight",
                        "layers.0.attention_norm2.weight", "layers.1.ffn_norm1.weight"})
    EXPECT_TRUE(params.contains(n)) << n;
  EXPECT_FALSE(params.contains("context_refiner.0.adaLN_modulation.0.weight"));
  EXPECT_FALSE(params.contains("layers.0.attention.to_q.bias"));
}

TEST(ZImage, ConfigErrorsNameTheProblem) {
  auto c = tiny_config();
  c.axes_dims = {8, 8, 8};
  try {
    c.validate("x.toml");
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("axes_dims"), std::string::npos) << e.what();
  }
}

TEST(ZImage, BackwardReachesEveryParameter) {
  auto c = tiny_config();
  auto m = random_model(c, 1);
  auto in = random_input(c, 2, 40, 2);
  in.cap_mask = torch::ones({2, 40}, torch::kBool);
  in.cap_mask.index_put_({0, torch::indexing::Slice(5, torch::indexing::None)}, false);  // ragged: 5 vs 40 tokens
  auto y = m->forward(in);
  EXPECT_EQ(y.sizes(), in.x.sizes());
  (y * torch::randn_like(y)).sum().backward();
  for (auto& p : m->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
}

TEST(ZImage, PaddedConditionTokensDoNotChangeTheOutput) {
  auto c = tiny_config();
  auto m = random_model(c, 3);
  torch::NoGradGuard g;
  auto in = random_input(c, 2, 45, 4);
  in.cap_mask = torch::ones({2, 45}, torch::kBool);
  in.cap_mask.index_put_({0, torch::indexing::Slice(7, torch::indexing::None)}, false);
  in.cap_mask.index_put_({1, torch::indexing::Slice(0, 3)}, false);  // holes at the front too
  auto y0 = m->forward(in);
  auto in2 = in;
  in2.cap_feats = in.cap_feats.clone();
  auto junk = torch::randn_like(in.cap_feats) * 100.0;
  auto pad = (~in.cap_mask).unsqueeze(-1);
  in2.cap_feats = torch::where(pad, junk, in.cap_feats);
  auto y1 = m->forward(in2);
  EXPECT_LT((y0 - y1).abs().max().item<double>(), 1e-5);
  // Sample 0 alone (its 7 real tokens only) gives the same output as in the ragged batch.
  ZImageInput one;
  one.x = in.x.narrow(0, 0, 1);
  one.t = in.t.narrow(0, 0, 1);
  one.cap_feats = in.cap_feats.narrow(0, 0, 1).narrow(1, 0, 7);
  auto y2 = m->forward(one);
  // (a different batch layout: masked vs unmasked attention kernels, so fp32 rounding, relative to the output scale)
  double scale = y0.abs().max().item<double>();
  std::printf("alone vs batched: max abs diff %.3g, output scale %.3g\n", (y0.narrow(0, 0, 1) - y2).abs().max().item<double>(), scale);
  EXPECT_LT((y0.narrow(0, 0, 1) - y2).abs().max().item<double>(), 1e-5 * scale);
  // ... and the real tokens do matter.
  auto in3 = in;
  in3.cap_feats = in.cap_feats.clone();
  in3.cap_feats.index_put_({0, 2}, torch::randn({c.cap_feat_dim}));
  EXPECT_GT((m->forward(in3) - y0).narrow(0, 0, 1).abs().max().item<double>(), 1e-4);
}

TEST(ZImage, InitGivesZeroOutputAndIdentityGates) {
  auto c = tiny_config();
  ZImageDiT m(c);
  m->init_weights(7);
  torch::NoGradGuard g;
  auto in = random_input(c, 2, 9, 8);
  auto y = m->forward(in);
  EXPECT_EQ(y.abs().max().item<double>(), 0.0);
  auto l = m->layers[0]->as<ZImageBlock>();
  EXPECT_EQ(l->ada->weight.abs().max().item<double>(), 0.0);
  EXPECT_EQ(l->attention_norm1->weight.min().item<double>(), 1.0);
  EXPECT_GT(l->attention->to_q->weight.abs().max().item<double>(), 0.0);
  EXPECT_GT(m->cap_pad_token.abs().max().item<double>(), 0.0);
}

TEST(ZImage, VelocityIsNegatedOutputAtOneMinusT) {
  auto c = tiny_config();
  auto m = random_model(c, 5);
  torch::NoGradGuard g;
  auto in = random_input(c, 2, 6, 9);
  auto v = zimage_velocity(m, in.x, in.t, in.cap_feats);
  in.t = 1.0 - in.t;
  EXPECT_LT((v + m->forward(in)).abs().max().item<double>(), 1e-6);
}

TEST(ZImage, PatchifyIsChannelLast) {
  // No blocks: the model is final_layer(x_embedder(patches)), so with identity-like embedder and final linear the
  // patch feature order (ph*2+pw)*C + c (channel-last, Z-Image's) is visible in the output.
  auto c = tiny_config();
  c.n_layers = 0;
  c.n_refiner_layers = 0;
  ZImageDiT m(c);
  m->init_weights(1);
  torch::NoGradGuard g;
  auto P = c.patch_dim();
  m->x_embed->weight.zero_();
  m->final_layer->linear->weight.zero_();
  for (int64_t k = 0; k < P; ++k) {
    m->x_embed->weight[k][k] = 1.0;
    m->final_layer->linear->weight[k][k] = 1.0;
  }
  ZImageInput in;
  in.x = torch::randn({1, c.in_channels, 4, 4});
  in.t = torch::zeros({1});
  in.cap_feats = torch::randn({1, 3, c.cap_feat_dim});
  auto y = m->forward(in);
  // Expected: tokens [(h/2)*2 + w/2] with features (ph*2+pw)*C + c, zero-padded to D, LayerNorm, first P back.
  int64_t C = c.in_channels;
  auto expect = torch::zeros_like(in.x);
  for (int64_t th = 0; th < 2; ++th)
    for (int64_t tw = 0; tw < 2; ++tw) {
      auto v = torch::zeros({c.dim});
      for (int64_t ph = 0; ph < 2; ++ph)
        for (int64_t pw = 0; pw < 2; ++pw)
          for (int64_t ch = 0; ch < C; ++ch) v[(ph * 2 + pw) * C + ch] = in.x[0][ch][th * 2 + ph][tw * 2 + pw];
      auto n = at::layer_norm(v, {c.dim}, {}, {}, 1e-6);
      for (int64_t ph = 0; ph < 2; ++ph)
        for (int64_t pw = 0; pw < 2; ++pw)
          for (int64_t ch = 0; ch < C; ++ch) expect[0][ch][th * 2 + ph][tw * 2 + pw] = n[(ph * 2 + pw) * C + ch];
    }
  EXPECT_LT((y - expect).abs().max().item<double>(), 1e-5);
  // The token for patch (0,0) holds x[c, ph, pw] at feature (ph*2+pw)*C + c: checked through the embedder.
  m->x_embed->weight.zero_();
  m->x_embed->weight[0][(1 * 2 + 0) * c.in_channels + 2] = 1.0;  // ph=1, pw=0, c=2
  m->final_layer->linear->weight.zero_();
  m->final_layer->linear->weight[0][0] = 1.0;  // back out at feature 0 = (ph 0, pw 0, c 0)
  y = m->forward(in);
  EXPECT_GT(y[0][0][0][0].item<double>() * in.x[0][2][1][0].item<double>(), 0.0);
}

TEST(ZImage, LoadsOriginalZImageNames) {
  auto c = tiny_config();
  auto m = random_model(c, 11);
  auto state = module_state(*m);
  // The original Tongyi-MAI names: fused qkv, attention.out, q_norm/k_norm, final_layer./x_embedder., a prefix.
  TensorMap orig;
  for (auto& [k, v] : state) {
    std::string n = k;
    auto rep = [&](const std::string& a, const std::string& b) {
      auto p = n.find(a);
      if (p != std::string::npos) n = n.substr(0, p) + b + n.substr(p + a.size());
    };
    if (n.find(".attention.to_k.") != std::string::npos || n.find(".attention.to_v.") != std::string::npos) continue;
    if (n.find(".attention.to_q.weight") != std::string::npos) {
      auto base = n.substr(0, n.find(".attention.to_q.weight"));
      orig["model.diffusion_model." + base + ".attention.qkv.weight"] =
          torch::cat({v, state.at(base + ".attention.to_k.weight"), state.at(base + ".attention.to_v.weight")}, 0);
      continue;
    }
    rep("all_final_layer.2-1.", "final_layer.");
    rep("all_x_embedder.2-1.", "x_embedder.");
    rep(".attention.to_out.0.", ".attention.out.");
    rep(".attention.norm_q.", ".attention.q_norm.");
    rep(".attention.norm_k.", ".attention.k_norm.");
    orig["model.diffusion_model." + n] = v;
  }
  orig["norm_final.weight"] = torch::ones({c.dim});
  ASSERT_TRUE(is_original_zimage(orig));
  EXPECT_FALSE(is_original_zimage(state));
  auto conv = zimage_from_original(orig);
  EXPECT_EQ(conv.size(), state.size());
  ZImageDiT m2(c);
  load_weights(*m2, conv, "original");
  torch::NoGradGuard g;
  auto in = random_input(c, 1, 5, 12);
  EXPECT_TRUE(torch::equal(m->forward(in), m2->forward(in)));
}
