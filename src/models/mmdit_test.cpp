#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <functional>

#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/tensor_io.h"
#include "models/mmdit.h"
#include "models/name_conversion.h"
#include "models/weights.h"

using namespace iomm;

namespace {

MMDiTConfig tiny_config(bool vec = true, bool guidance = true) {
  MMDiTConfig c;
  c.in_channels = 12;
  c.out_channels = 12;
  c.hidden_size = 32;
  c.num_heads = 2;
  c.depth = 2;
  c.depth_single = 2;
  c.context_in_dim = 24;
  c.vec_in_dim = vec ? 8 : 0;
  c.guidance_embed = guidance;
  c.axes_dim = {4, 6, 6};
  return c;
}

// Random (not adaLN-Zero) weights, so that every path carries signal.
MMDiT random_model(const MMDiTConfig& c, uint64_t seed, torch::Dtype dt = torch::kFloat32) {
  MMDiT m(c, torch::TensorOptions().dtype(dt));
  torch::NoGradGuard g;
  torch::manual_seed(seed);
  for (auto& p : m->named_parameters()) {
    if (p.key().find(".scale") != std::string::npos) p.value().uniform_(0.5, 1.5);
    else p.value().normal_(0.0, 0.15);
  }
  return m;
}

MMDiTInput random_input(const MMDiTConfig& c, int64_t B, int64_t L, uint64_t seed, torch::Dtype dt = torch::kFloat32) {
  torch::manual_seed(seed);
  auto o = torch::TensorOptions().dtype(dt);
  MMDiTInput in;
  in.img = torch::randn({B, 16, c.in_channels}, o);  // an 8x8 latent -> 4x4 tokens
  in.img_ids = image_position_ids(8, 8);
  in.txt = torch::randn({B, L, c.context_in_dim}, o);
  in.txt_ids = torch::zeros({L, 3});
  in.timesteps = torch::rand({B}, o);
  if (c.vec_in_dim) in.y = torch::randn({B, c.vec_in_dim}, o);
  if (c.guidance_embed) in.guidance = torch::full({B}, 3.5, o);
  return in;
}

double max_abs(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

// Central finite differences of a scalar function against autograd, in float64.
void expect_gradients_match(const std::function<at::Tensor(const std::vector<at::Tensor>&)>& f,
                            std::vector<at::Tensor> inputs, double tol = 1e-6) {
  for (auto& x : inputs) x = x.detach().to(torch::kDouble).requires_grad_(true);
  auto y = f(inputs);
  auto grads = torch::autograd::grad({y}, inputs, {}, false, false, /*allow_unused=*/true);
  torch::NoGradGuard ng;
  const double eps = 1e-6;
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto flat = inputs[i].view({-1});
    auto g = grads[i].defined() ? grads[i].reshape({-1}) : torch::zeros_like(flat);
    for (int64_t j = 0; j < flat.numel(); ++j) {
      double orig = flat[j].item<double>();
      flat[j] = orig + eps;
      double up = f(inputs).item<double>();
      flat[j] = orig - eps;
      double down = f(inputs).item<double>();
      flat[j] = orig;
      double num = (up - down) / (2 * eps);
      EXPECT_NEAR(g[j].item<double>(), num, tol * std::max(1.0, std::abs(num))) << "input " << i << " element " << j;
    }
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------------- sizes

TEST(MMDiT, ParameterCountsMatchPublishedFluxSizes) {
  // FLUX.1-dev: 11,901,408,320 parameters; schnell (no guidance_in): 11,891,178,560 (research/backbone.md §1.9).
  MMDiTConfig dev;  // FLUX.1's sizes (the struct's defaults are IOMM-B's)
  dev.hidden_size = 3072;
  dev.num_heads = 24;
  dev.depth = 19;
  dev.depth_single = 38;
  dev.context_in_dim = 4096;
  dev.vec_in_dim = 768;
  dev.guidance_embed = true;
  EXPECT_EQ(mmdit_parameter_count(dev), 11901408320LL);
  dev.guidance_embed = false;
  EXPECT_EQ(mmdit_parameter_count(dev), 11891178560LL);
}

TEST(MMDiT, DefaultsAreIommB) {
  // One set of defaults: the struct's are what from_config resolves an empty [generator] to (IOMM-B, ≈1.57B).
  auto cfg = Config::parse("");
  auto c = MMDiTConfig::from_config(cfg, "generator", 1536);
  EXPECT_EQ(c.to_bfl_json(), MMDiTConfig{}.to_bfl_json());
  EXPECT_EQ(c.hidden_size, 1536);
  EXPECT_EQ(c.depth, 10);
  EXPECT_EQ(c.depth_single, 20);
}

TEST(MMDiT, ParameterCountsOfTheIommConfigs) {
  struct Case {
    const char* file;
    int64_t lo, hi;
  };
  for (auto cs : {Case{"iomm-b.toml", 1500000000LL, 1700000000LL}, Case{"iomm-l.toml", 2600000000LL, 2800000000LL}}) {
    auto cfg = Config::load(std::string(IOMM_SOURCE_DIR) + "/configs/model/" + cs.file);
    auto c = MMDiTConfig::from_config(cfg, "generator");
    cfg.check_unused("generator");
    // Built on the meta device: the real module classes, no memory.
    MMDiT m(c, torch::TensorOptions().device(torch::kMeta));
    EXPECT_TRUE(m->img_in->weight.is_meta());
    int64_t n = count_parameters(*m);
    // The closed form of research/backbone.md §1.9 (in = out = 64, no pooled vector, no guidance).
    int64_t D = c.hidden_size, h = c.head_dim(), C = c.context_in_dim;
    int64_t formula = c.depth * (36 * D * D + 30 * D + 4 * h) + c.depth_single * (15 * D * D + 11 * D + 2 * h) +
                      3 * D * D + (C + 390) * D + 64;
    EXPECT_EQ(n, formula) << cs.file;
    EXPECT_GE(n, cs.lo) << cs.file;
    EXPECT_LE(n, cs.hi) << cs.file;
    std::printf("%s: %lld parameters\n", cs.file, static_cast<long long>(n));
  }
}

TEST(MMDiT, ConfigErrorsNameTheProblem) {
  auto cfg = Config::parse("[generator]\nhidden_size = 64\nnum_heads = 2\naxes_dim = [4, 6, 6]\n", "bad.toml");
  try {
    MMDiTConfig::from_config(cfg, "generator");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("axes_dim"), std::string::npos) << m;
    EXPECT_NE(m.find("bad.toml"), std::string::npos) << m;
  }
}

// ------------------------------------------------------------------------------------------------- numerics

TEST(MMDiT, RopeIsComplexRotationOfAdjacentPairs) {
  torch::manual_seed(0);
  auto ids = torch::randint(0, 20, {7, 3}).to(torch::kFloat32);
  auto pe = flux_rope(ids, {4, 6, 6}, 10000.0);
  auto x = torch::randn({2, 3, 7, 16}, torch::kDouble);
  auto y = apply_flux_rope(x, pe);
  // (x[2j] + i x[2j+1]) * exp(i angle_j), angle_j = pos_axis * theta^(-2k/d_axis) with axes concatenated.
  auto angles = torch::cat({ids.select(1, 0).unsqueeze(1).to(torch::kDouble) *
                                (1.0 / torch::pow(10000.0, torch::arange(0, 4, 2, torch::kDouble) / 4.0)),
                            ids.select(1, 1).unsqueeze(1).to(torch::kDouble) *
                                (1.0 / torch::pow(10000.0, torch::arange(0, 6, 2, torch::kDouble) / 6.0)),
                            ids.select(1, 2).unsqueeze(1).to(torch::kDouble) *
                                (1.0 / torch::pow(10000.0, torch::arange(0, 6, 2, torch::kDouble) / 6.0))},
                           1);
  auto xc = torch::view_as_complex(x.reshape({2, 3, 7, 8, 2}).contiguous());
  auto rot = torch::polar(torch::ones_like(angles), angles);
  auto expect = torch::view_as_real(xc * rot).flatten(3);
  EXPECT_LT(max_abs(y, expect), 1e-6);
}

TEST(MMDiT, GradientCheckRope) {
  torch::manual_seed(1);
  auto ang = torch::rand({1, 5, 4}, torch::kDouble) * 6.0;
  RopeTables pe{ang.cos(), ang.sin()};
  auto w = torch::randn({1, 2, 5, 8}, torch::kDouble);
  expect_gradients_match([&](const std::vector<at::Tensor>& v) { return (apply_flux_rope(v[0], pe) * w).sum(); },
                         {torch::randn({1, 2, 5, 8})});
}

TEST(MMDiT, GradientCheckModulation) {
  torch::manual_seed(2);
  auto w = torch::randn({2, 3, 6}, torch::kDouble);
  expect_gradients_match(
      [&](const std::vector<at::Tensor>& v) { return (modulate(v[0], v[1], v[2]) * w).sum(); },
      {torch::randn({2, 3, 6}), torch::randn({2, 1, 6}), torch::randn({2, 1, 6})});
  // The Modulation module: lin(SiLU(vec)) chunked; gradients with respect to vec and to lin's weight.
  Modulation mod(6, /*is_double=*/true, torch::TensorOptions().dtype(torch::kDouble));
  {
    torch::NoGradGuard g;
    mod->lin->weight.normal_();
    mod->lin->bias.normal_();
  }
  auto ws = torch::randn({6, 2, 1, 6}, torch::kDouble);
  expect_gradients_match(
      [&](const std::vector<at::Tensor>& v) {
        auto saved = mod->lin->weight;
        mod->lin->weight = v[1];
        auto parts = mod->forward(v[0]);
        mod->lin->weight = saved;
        auto s = torch::zeros({}, torch::kDouble);
        for (size_t i = 0; i < parts.size(); ++i) s = s + (parts[i] * ws[i]).sum();
        return s;
      },
      {torch::randn({2, 6}), mod->lin->weight.detach().clone()});
}

TEST(MMDiT, GradientCheckMaskedAttention) {
  torch::manual_seed(3);
  auto ang = torch::rand({1, 5, 2}, torch::kDouble);
  RopeTables pe{ang.cos(), ang.sin()};
  auto mask = torch::tensor({true, false, true, true, false}).view({1, 1, 1, 5}).expand({2, 1, 1, 5});
  auto w = torch::randn({2, 5, 8}, torch::kDouble);
  auto f = [&](const std::vector<at::Tensor>& v) { return (flux_attention(v[0], v[1], v[2], pe, mask) * w).sum(); };
  std::vector<at::Tensor> qkv = {torch::randn({2, 2, 5, 4}), torch::randn({2, 2, 5, 4}), torch::randn({2, 2, 5, 4})};
  expect_gradients_match(f, qkv);
  // Masked keys and values receive exactly zero gradient.
  std::vector<at::Tensor> in;
  for (auto& t : qkv) in.push_back(t.to(torch::kDouble).requires_grad_(true));
  auto g = torch::autograd::grad({f(in)}, in);
  for (int64_t pos : {1, 4}) {
    EXPECT_EQ(g[1].select(2, pos).abs().max().item<double>(), 0.0);
    EXPECT_EQ(g[2].select(2, pos).abs().max().item<double>(), 0.0);
  }
  EXPECT_GT(g[1].select(2, 0).abs().max().item<double>(), 0.0);
}

TEST(MMDiT, GradientCheckWholeModelInFloat64) {
  auto c = tiny_config();
  c.depth = 1;
  c.depth_single = 1;
  auto m = random_model(c, 4, torch::kDouble);
  auto in = random_input(c, 1, 3, 5, torch::kDouble);
  in.img = in.img.narrow(1, 0, 4);
  in.img_ids = image_position_ids(4, 4);
  in.txt_mask = torch::tensor({{1, 1, 0}});
  auto w = torch::randn({1, 4, c.out_channels}, torch::kDouble);
  expect_gradients_match(
      [&](const std::vector<at::Tensor>& v) {
        auto x = in;
        x.img = v[0];
        x.txt = v[1];
        return (m->forward(x) * w).sum();
      },
      {in.img.narrow(2, 0, c.in_channels), in.txt}, 1e-5);
}

TEST(MMDiT, BackwardReachesEveryParameter) {
  auto c = tiny_config(/*vec=*/true, /*guidance=*/true);
  auto m = random_model(c, 6);
  auto in = random_input(c, 2, 5, 7);
  in.txt_mask = torch::tensor({{1, 1, 1, 1, 1}, {1, 1, 1, 0, 0}});
  auto out = m->forward(in);
  (out * torch::randn_like(out)).sum().backward();
  int64_t n = 0;
  for (auto& p : m->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
    ++n;
  }
  // every module of the model: embedders, both streams of each double block, single blocks, final layer
  EXPECT_EQ(n, static_cast<int64_t>(m->parameters().size()));
  EXPECT_GT(n, 60);
}

TEST(MMDiT, PaddedTxtTokensDoNotChangeTheImage) {
  auto c = tiny_config(false, false);
  auto m = random_model(c, 8);
  torch::NoGradGuard g;
  auto in = random_input(c, 2, 7, 9);
  in.txt_mask = torch::tensor({{1, 1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 0, 0, 0}}).to(torch::kBool);
  auto a = m->forward(in);
  // other junk in the padded positions
  auto in2 = in;
  in2.txt = in.txt.clone();
  in2.txt.index_put_({1, torch::indexing::Slice(4, 7)}, torch::randn({3, c.context_in_dim}) * 10);
  auto b = m->forward(in2);
  EXPECT_LT(max_abs(a, b), 1e-5);
  // equal to running row 1 alone without its padding
  auto in3 = in;
  in3.img = in.img.narrow(0, 1, 1);
  in3.txt = in.txt.narrow(0, 1, 1).narrow(1, 0, 4);
  in3.txt_ids = torch::zeros({4, 3});
  in3.timesteps = in.timesteps.narrow(0, 1, 1);
  in3.txt_mask = at::Tensor();
  auto row = m->forward(in3);
  EXPECT_LT(max_abs(a.narrow(0, 1, 1), row), 1e-5);
  // and the padding mask matters: without it the junk does change the output
  in2.txt_mask = at::Tensor();
  EXPECT_GT(max_abs(a, m->forward(in2)), 1e-3);
}

TEST(MMDiT, InitIsAdaLNZero) {
  auto c = tiny_config(false, false);
  MMDiT m(c);
  m->init_weights(11);
  torch::NoGradGuard g;
  auto out = m->forward(random_input(c, 2, 3, 12));
  EXPECT_EQ(out.abs().max().item<double>(), 0.0);
  EXPECT_EQ(m->double_blocks[0]->as<DoubleStreamBlockImpl>()->img_mod->lin->weight.abs().max().item<double>(), 0.0);
  EXPECT_GT(m->double_blocks[0]->as<DoubleStreamBlockImpl>()->img_attn->qkv->weight.abs().max().item<double>(), 0.0);
  EXPECT_EQ(m->single_blocks[0]->as<SingleStreamBlockImpl>()->norm->query_norm->scale.min().item<double>(), 1.0);
}

// ------------------------------------------------------------------------------------------------- layout

TEST(MMDiT, PackingIsChannelMajorTwoByTwo) {
  auto x = torch::randn({2, 3, 6, 8});
  auto t = pack_latents(x);
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{2, 12, 12}));
  for (int64_t r : {0, 2})
    for (int64_t col : {1, 3})
      for (int64_t ch = 0; ch < 3; ++ch)
        for (int64_t ph = 0; ph < 2; ++ph)
          for (int64_t pw = 0; pw < 2; ++pw)
            EXPECT_EQ(t[1][r * 4 + col][ch * 4 + ph * 2 + pw].item<float>(),
                      x[1][ch][2 * r + ph][2 * col + pw].item<float>());
  EXPECT_TRUE(torch::equal(unpack_latents(t, 6, 8), x));
  auto ids = image_position_ids(6, 8);
  ASSERT_EQ(ids.sizes(), (std::vector<int64_t>{12, 3}));
  EXPECT_EQ(ids[7][0].item<float>(), 0.0f);
  EXPECT_EQ(ids[7][1].item<float>(), 1.0f);
  EXPECT_EQ(ids[7][2].item<float>(), 3.0f);
}

TEST(MMDiT, DiffusersNamesRoundTrip) {
  auto c = tiny_config(true, true);
  auto m = random_model(c, 13);
  auto bfl = module_state(*m);
  auto hf = flux_to_diffusers(bfl);
  EXPECT_TRUE(is_diffusers_flux(hf));
  EXPECT_TRUE(hf.count("transformer_blocks.1.attn.add_k_proj.bias"));
  EXPECT_TRUE(hf.count("single_transformer_blocks.0.proj_mlp.weight"));
  EXPECT_EQ(hf.at("single_transformer_blocks.0.proj_mlp.weight").size(0), 4 * c.hidden_size);
  // final layer: BFL (shift, scale) is diffusers (scale, shift)
  auto ada = bfl.at("final_layer.adaLN_modulation.1.weight");
  EXPECT_TRUE(torch::equal(hf.at("norm_out.linear.weight").narrow(0, 0, c.hidden_size),
                           ada.narrow(0, c.hidden_size, c.hidden_size)));
  auto back = flux_from_diffusers(hf);
  ASSERT_EQ(back.size(), bfl.size());
  for (auto& [k, v] : bfl) {
    ASSERT_TRUE(back.count(k)) << k;
    EXPECT_TRUE(torch::equal(back.at(k), v)) << k;
  }
}

TEST(MMDiT, SaveAndLoadBothFormatsGiveTheSameOutputs) {
  auto c = tiny_config(false, false);
  c.qkv_bias = false;  // diffusers gets zero biases and a zero pooled-vector embedder
  auto m = random_model(c, 14);
  auto dir = std::filesystem::temp_directory_path() / ("iomm_mmdit_test_" + std::to_string(::getpid()));
  torch::NoGradGuard g;
  auto in = random_input(c, 2, 4, 15);
  auto ref = m->forward(in);
  save_mmdit(m, (dir / "bfl").string(), "bfl");
  auto a = load_mmdit((dir / "bfl").string());
  EXPECT_EQ(a->config.qkv_bias, false);
  EXPECT_LT(max_abs(a->forward(in), ref), 1e-6);
  save_mmdit(m, (dir / "hf").string(), "diffusers");
  auto b = load_mmdit((dir / "hf").string());
  EXPECT_EQ(b->config.vec_in_dim, 768);
  auto in_b = in;
  in_b.y = torch::randn({2, 768});  // any pooled vector: its embedder is zero
  EXPECT_LT(max_abs(b->forward(in_b), ref), 1e-6);
  std::filesystem::remove_all(dir);
  EXPECT_FALSE(std::filesystem::exists(dir));
}

TEST(MMDiT, InfersFluxSizesFromBflWeights) {
  MMDiTConfig c;
  c.hidden_size = 256;
  c.num_heads = 2;
  c.depth = 1;
  c.depth_single = 2;
  c.context_in_dim = 40;
  c.vec_in_dim = 24;
  c.guidance_embed = true;
  c.mlp_ratio = 2.0;
  auto m = random_model(c, 16);
  auto inferred = MMDiTConfig::infer_from_weights(module_state(*m), "test");
  EXPECT_EQ(inferred.to_bfl_json(), c.to_bfl_json());
}
