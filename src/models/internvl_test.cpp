#include <gtest/gtest.h>

#include <c10/core/impl/LocalDispatchKeySet.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/error.h"
#include "models/internvl.h"
#include "models/internvl_preprocess.h"
#include "models/name_conversion.h"
#include "models/weights.h"

using namespace iomm;

namespace {

// Tensors created while this guard lives are meta tensors (shapes, no memory): factory functions skip
// BackendSelect and dispatch to the Meta kernels; the in-place initialisers are no-ops there. It lets the real
// module classes be built at full size without allocating their weights. The whole thread-local key state is
// restored at the end (the include guard alone would leave the Meta backend bit behind).
struct MetaConstruction {
  c10::impl::ForceDispatchKeyGuard restore_on_exit;
  c10::impl::ExcludeDispatchKeyGuard no_backend_select{c10::DispatchKey::BackendSelect};
  c10::impl::IncludeDispatchKeyGuard meta{c10::DispatchKey::Meta};
};

InternVLConfig internvl3_2b() {
  // InternVL3-2B (research mllm.md §1.2, §1.5): InternViT-300M + Qwen2.5-1.5B, untied LM head.
  InternVLConfig c;
  c.vision.hidden_size = 1024;
  c.vision.num_hidden_layers = 24;
  c.vision.num_attention_heads = 16;
  c.vision.intermediate_size = 4096;
  c.vision.image_size = 448;
  c.vision.patch_size = 14;
  c.vision.qkv_bias = true;
  c.llm.hidden_size = 1536;
  c.llm.num_hidden_layers = 28;
  c.llm.num_attention_heads = 12;
  c.llm.num_key_value_heads = 2;
  c.llm.head_dim = 128;
  c.llm.intermediate_size = 8960;
  c.llm.vocab_size = 151674;
  c.llm.tie_word_embeddings = false;
  return c;
}

InternVLConfig tiny() {
  InternVLConfig c;
  c.vision.hidden_size = 16;
  c.vision.num_hidden_layers = 2;
  c.vision.num_attention_heads = 2;
  c.vision.intermediate_size = 24;
  c.vision.image_size = 56;
  c.vision.patch_size = 14;
  c.llm.hidden_size = 32;
  c.llm.num_hidden_layers = 2;
  c.llm.num_attention_heads = 4;
  c.llm.num_key_value_heads = 2;
  c.llm.head_dim = 8;
  c.llm.intermediate_size = 40;
  c.llm.vocab_size = 60;
  c.image_token_id = 59;
  c.tile_size = 56;
  return c;
}

}  // namespace

TEST(InternVL, PixelShuffleIndexLaw) {
  // out[n, y·(w/2) + x, dy·2C + dx·C + c] = in[n, 2y + dy, 2x + dx, c]  (mllm.md §1.3), non-square grid too.
  const int64_t N = 2, h = 6, w = 4, C = 3;
  auto in = torch::arange(N * h * w * C, torch::kLong).reshape({N, h, w, C});
  auto out = pixel_shuffle_v2(in);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{N, (h / 2) * (w / 2), 4 * C}));
  auto a = in.accessor<int64_t, 4>();
  auto b = out.accessor<int64_t, 3>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t y = 0; y < h / 2; ++y)
      for (int64_t x = 0; x < w / 2; ++x)
        for (int64_t dy = 0; dy < 2; ++dy)
          for (int64_t dx = 0; dx < 2; ++dx)
            for (int64_t c = 0; c < C; ++c)
              ASSERT_EQ(b[n][y * (w / 2) + x][dy * 2 * C + dx * C + c], a[n][2 * y + dy][2 * x + dx][c]);
  // The reference's view/permute sequence (transformers InternVLModel.pixel_shuffle) on a square grid.
  auto sq = torch::arange(N * 4 * 4 * C, torch::kLong).reshape({N, 4, 4, C});
  auto ref = sq.view({N, 4, 2, 2 * C}).permute({0, 2, 1, 3}).contiguous().view({N, 2, 2, 4 * C}).permute({0, 2, 1, 3});
  EXPECT_TRUE(torch::equal(pixel_shuffle_v2(sq), ref.reshape({N, 4, 4 * C})));
  EXPECT_THROW(pixel_shuffle_v2(torch::zeros({1, 3, 4, 2})), Error);
}

TEST(InternVL, ParameterCountOfInternVL3_2B) {
  int64_t vit, mlp1, llm, total;
  {
    MetaConstruction meta;
    InternVL m(internvl3_2b(), /*with_lm_head=*/true);
    for (auto& p : m->parameters()) ASSERT_TRUE(p.is_meta()) << "a weight was allocated";
    vit = count_parameters(*m->vision_model);
    mlp1 = count_parameters(*m->mlp1);
    llm = count_parameters(*m->language_model);
    total = count_parameters(*m);
    EXPECT_EQ(m->named_parameters().size(), 685u);  // tensors in the original checkpoint (mllm.md §2.1)
  }
  EXPECT_FALSE(torch::zeros({2}).is_meta());
  EXPECT_FALSE((torch::ones({2}) + torch::ones({2})).is_meta());
  EXPECT_EQ(vit, 304'012'288);
  EXPECT_EQ(mlp1, 8'662'016);
  EXPECT_EQ(llm, 1'310'340'608 + 2 * 232'971'264);
  EXPECT_EQ(total, 2'088'957'440);
  EXPECT_EQ(internvl3_2b().tokens_per_tile(), 256);
}

TEST(InternVL, ImageTokensAndSplice) {
  torch::manual_seed(0);
  InternVL m(tiny(), false);
  freeze(*m);
  m->eval();
  auto pv = torch::randn({3, 3, 56, 56});
  auto tok = m->image_tokens(pv);
  ASSERT_EQ(tok.sizes(), (std::vector<int64_t>{3, 4, 32}));
  // Tiles are independent: one tile alone gives the same tokens.
  EXPECT_LT((m->image_tokens(pv.slice(0, 1, 2)) - tok.slice(0, 1, 2)).abs().max().item<double>(), 1e-5);

  auto ids = torch::randint(0, 59, {2, 11}, torch::kLong);
  ids.index_put_({0, torch::indexing::Slice(2, 6)}, 59);   // tile 0
  ids.index_put_({1, torch::indexing::Slice(1, 9)}, 59);   // tiles 1, 2
  auto e = m->embed_tokens(ids);
  auto s = m->splice_image_tokens(ids, e, tok);
  EXPECT_TRUE(torch::equal(s.index({0, torch::indexing::Slice(2, 6)}), tok[0]));
  EXPECT_TRUE(torch::equal(s.index({1, torch::indexing::Slice(1, 9)}), tok.slice(0, 1).reshape({8, 32})));
  EXPECT_TRUE(torch::equal(s.index({0, torch::indexing::Slice(6)}), e.index({0, torch::indexing::Slice(6)})));
  EXPECT_THROW(m->splice_image_tokens(ids, e, tok.slice(0, 0, 2)), Error);
  EXPECT_THROW(m->forward(ids), Error);  // placeholders but no pixel_values

  // forward == splice + forward_embeds.
  auto out = m->forward(ids, {}, pv);
  auto ref = m->forward_embeds(s).last_hidden_state;
  EXPECT_LT((out.last_hidden_state - ref).abs().max().item<double>(), 1e-6);
}

TEST(InternVL, FrozenButDifferentiableInInputEmbeddings) {
  torch::manual_seed(1);
  InternVL m(tiny(), false);
  freeze(*m);
  auto pv = torch::randn({1, 3, 56, 56});
  auto ids = torch::randint(0, 59, {1, 9}, torch::kLong);
  ids.index_put_({0, torch::indexing::Slice(1, 5)}, 59);
  at::Tensor img;
  {
    torch::NoGradGuard ng;
    img = m->image_tokens(pv);
  }
  // Masked image tokens (as IOMM's MIM does) and trainable queries appended after them.
  auto q = torch::randn({1, 3, 32}).requires_grad_(true);
  auto e = m->splice_image_tokens(ids, m->embed_tokens(ids), img);
  auto h = m->forward_embeds(torch::cat({e, q}, 1)).last_hidden_state;
  h.slice(1, 9).sum().backward();
  ASSERT_TRUE(q.grad().defined());
  EXPECT_GT(q.grad().abs().max().item<double>(), 0.0);
  for (auto& p : m->parameters()) {
    EXPECT_FALSE(p.requires_grad());
    EXPECT_FALSE(p.grad().defined());
  }
}

TEST(InternVL, ConfigFromBothLayouts) {
  auto hf = nlohmann::json::parse(R"({
    "model_type": "internvl", "downsample_ratio": 0.5, "image_token_id": 151667,
    "vision_feature_layer": -1, "vision_feature_select_strategy": "default",
    "vision_config": {"model_type": "internvl_vision", "hidden_size": 1024, "num_hidden_layers": 24,
      "num_attention_heads": 16, "intermediate_size": 4096, "attention_bias": true, "use_qk_norm": false,
      "image_size": [448, 448], "patch_size": [14, 14], "norm_type": "layer_norm", "layer_norm_eps": 1e-6},
    "text_config": {"model_type": "qwen2", "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
      "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151674, "rope_theta": 1000000.0}})");
  auto orig = nlohmann::json::parse(R"({
    "model_type": "internvl_chat", "downsample_ratio": 0.5, "ps_version": "v2", "select_layer": -1,
    "force_image_size": 448,
    "vision_config": {"model_type": "intern_vit_6b", "hidden_size": 1024, "num_hidden_layers": 24,
      "num_attention_heads": 16, "intermediate_size": 4096, "qkv_bias": true, "qk_normalization": false,
      "image_size": 448, "patch_size": 14, "norm_type": "layer_norm", "layer_norm_eps": 1e-6},
    "llm_config": {"model_type": "qwen2", "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
      "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151674, "rope_theta": 1000000.0}})");
  for (auto* j : {&hf, &orig}) {
    auto c = InternVLConfig::from_json(*j, "config.json");
    EXPECT_EQ(c.vision.hidden_size, 1024);
    EXPECT_TRUE(c.vision.qkv_bias);
    EXPECT_EQ(c.vision.grid(), 32);
    EXPECT_EQ(c.llm.num_key_value_heads, 2);
    EXPECT_EQ(c.image_token_id, 151667);
    EXPECT_EQ(c.tokens_per_tile(), 256);
  }
  // Unsupported variants fail naming the field.
  auto expect_fail = [](nlohmann::json j, const std::string& needle) {
    try {
      InternVLConfig::from_json(j, "config.json");
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto j = orig;
  j["ps_version"] = "v1";
  expect_fail(j, "ps_version");
  j = orig;
  j["vision_config"].erase("qk_normalization");  // the original class defaults to true
  expect_fail(j, "qk_normalization");
  j = hf;
  j["vision_config"]["use_mean_pooling"] = false;
  expect_fail(j, "use_mean_pooling");
  j = hf;
  j["downsample_ratio"] = 0.25;
  expect_fail(j, "downsample_ratio");
  j = hf;
  j["vision_feature_layer"] = -2;
  expect_fail(j, "vision_feature_layer");
  j = hf;
  j["vision_config"]["norm_type"] = "rms_norm";
  expect_fail(j, "norm_type");
}

TEST(InternVL, NameConversionFusesQkvAndMapsPrefixes) {
  TensorMap hf;
  auto q = torch::full({2, 2}, 1.0), k = torch::full({2, 2}, 2.0), v = torch::full({2, 2}, 3.0);
  hf["model.vision_tower.encoder.layer.3.attention.q_proj.weight"] = q;
  hf["model.vision_tower.encoder.layer.3.attention.k_proj.weight"] = k;
  hf["model.vision_tower.encoder.layer.3.attention.v_proj.weight"] = v;
  hf["model.vision_tower.encoder.layer.3.lambda_1"] = q;
  hf["model.vision_tower.encoder.layer.3.layernorm_after.bias"] = q;
  hf["model.vision_tower.encoder.layer.3.attention.projection_layer.weight"] = q;
  hf["model.vision_tower.embeddings.cls_token"] = q;
  hf["model.vision_tower.embeddings.patch_embeddings.projection.weight"] = q;
  hf["model.multi_modal_projector.linear_2.bias"] = q;
  hf["model.language_model.norm.weight"] = q;
  hf["lm_head.weight"] = q;
  hf["something.else"] = q;
  auto o = internvl_names(hf);
  std::vector<std::string> names;
  for (auto& [n, t] : o) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "language_model.lm_head.weight",
                       "language_model.model.norm.weight",
                       "mlp1.3.bias",
                       "something.else",
                       "vision_model.embeddings.class_embedding",
                       "vision_model.embeddings.patch_embedding.weight",
                       "vision_model.encoder.layers.3.attn.proj.weight",
                       "vision_model.encoder.layers.3.attn.qkv.weight",
                       "vision_model.encoder.layers.3.ls1",
                       "vision_model.encoder.layers.3.norm2.bias",
                   }));
  EXPECT_TRUE(torch::equal(o["vision_model.encoder.layers.3.attn.qkv.weight"], torch::cat({q, k, v})));
  // The tower alone, and an incomplete q/k/v triple keeps its names (so that loading lists it).
  hf.erase("model.vision_tower.encoder.layer.3.attention.v_proj.weight");
  auto t = internvit_names(hf);
  EXPECT_TRUE(t.count("encoder.layers.3.attention.q_proj.weight") == 0);
  EXPECT_TRUE(t.count("model.vision_tower.encoder.layer.3.attention.q_proj.weight") == 0);
  EXPECT_TRUE(t.count("encoder.layer.3.attention.q_proj.weight"));
  EXPECT_FALSE(t.count("encoder.layers.3.attn.qkv.weight"));
  EXPECT_TRUE(t.count("embeddings.class_embedding"));
  EXPECT_FALSE(t.count("lm_head.weight"));
}

TEST(InternVLPreprocess, TileGridMatchesReferenceRule) {
  // Expected grids from the reference rule (InternVL's dynamic_preprocess, min 1, max 12, 448) run in Python.
  struct Case {
    int w, h, cols, rows;
  };
  const Case cases[] = {{448, 448, 1, 1},  {800, 600, 4, 3},   {600, 800, 3, 4},   {1920, 1080, 4, 2},
                        {1080, 1920, 2, 4}, {500, 400, 4, 3},   {100, 1000, 1, 10}, {4000, 300, 12, 1},
                        {448, 224, 2, 1},   {1000, 1000, 3, 3}, {30, 30, 1, 1},     {2000, 1500, 4, 3},
                        {640, 480, 4, 3},   {1280, 720, 4, 2},  {5000, 5000, 3, 3}, {900, 300, 3, 1},
                        {512, 512, 1, 1},   {1344, 896, 3, 2},  {700, 100, 7, 1}};
  for (const auto& c : cases)
    EXPECT_EQ(choose_tile_grid(c.w, c.h), (TileGrid{c.cols, c.rows})) << c.w << "x" << c.h;
  EXPECT_EQ(choose_tile_grid(448, 448, 2, 6), (TileGrid{2, 2}));
  EXPECT_EQ(choose_tile_grid(1000, 100, 1, 6), (TileGrid{6, 1}));
  EXPECT_EQ(choose_tile_grid(1000, 1000, 1, 1), (TileGrid{1, 1}));
  EXPECT_THROW(choose_tile_grid(0, 10), Error);
  EXPECT_THROW(choose_tile_grid(10, 10, 3, 2), Error);
}

TEST(InternVLPreprocess, ConditionPixels) {
  // A constant image stays constant: ((x+1)/2 - mean) / std per channel, at 448².
  auto img = torch::empty({2, 3, 512, 512});
  img.index_put_({torch::indexing::Slice(), 0}, -1.0);
  img.index_put_({torch::indexing::Slice(), 1}, 0.0);
  img.index_put_({torch::indexing::Slice(), 2}, 1.0);
  auto pv = internvl_condition_pixels(img);
  ASSERT_EQ(pv.sizes(), (std::vector<int64_t>{2, 3, 448, 448}));
  const float v[3] = {0.f, 0.5f, 1.f};
  for (int c = 0; c < 3; ++c) {
    float want = (v[c] - kImageNetMean[c]) / kImageNetStd[c];
    EXPECT_NEAR(pv.select(1, c).min().item<float>(), want, 1e-6);
    EXPECT_NEAR(pv.select(1, c).max().item<float>(), want, 1e-6);
  }
  // Bilinear without antialias: a 2× downscale of a ramp samples midpoints between pixel pairs.
  auto ramp = torch::arange(8, torch::kFloat32).view({1, 1, 1, 8}).expand({1, 3, 8, 8}).contiguous() / 7.0 * 2 - 1;
  auto small = internvl_condition_pixels(ramp, 4);
  for (int i = 0; i < 4; ++i) {
    float x01 = (2 * i + 0.5f) / 7.0f;  // mean of pixels 2i and 2i+1 in [0,1]
    EXPECT_NEAR(small[0][0][0][i].item<float>(), (x01 - kImageNetMean[0]) / kImageNetStd[0], 1e-5);
  }
}
