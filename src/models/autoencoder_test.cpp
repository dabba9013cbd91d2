#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/error.h"
#include "core/tensor_io.h"
#include "models/autoencoder.h"
#include "models/name_conversion.h"
#include "models/weights.h"

using namespace iomm;

namespace {

AutoencoderConfig tiny_config() {
  AutoencoderConfig c;
  c.block_out_channels = {16, 32};
  c.layers_per_block = 1;
  c.latent_channels = 16;
  c.norm_num_groups = 8;
  c.scaling_factor = 0.7;
  c.shift_factor = -0.2;
  return c;
}

// Default (Kaiming) conv weights plus randomised norm affines, so that every path carries signal.
FluxAE random_ae(const AutoencoderConfig& c, uint64_t seed) {
  torch::manual_seed(seed);
  FluxAE m(c);
  torch::NoGradGuard g;
  for (auto& item : m->named_parameters())
    if (item.key().find("norm") != std::string::npos) item.value().add_(torch::randn_like(item.value()) * 0.2);
  m->eval();
  return m;
}

std::string temp_dir(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("iomm_ae_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d.string();
}

}  // namespace

TEST(AutoencoderIdentity, RoundTripIsExactAndChecksChannels) {
  IdentityAutoencoder ae;
  EXPECT_EQ(ae.latent_channels(), 3);
  EXPECT_EQ(ae.downsample_factor(), 1);
  auto x = torch::rand({2, 3, 8, 6}) * 2 - 1;
  auto z = ae.encode(x);
  EXPECT_EQ(z.sizes(), x.sizes());
  EXPECT_TRUE(torch::equal(ae.decode(z), x));
  EXPECT_THROW(ae.encode(torch::zeros({2, 4, 8, 8})), Error);
  EXPECT_THROW(ae.decode(torch::zeros({3, 8, 8})), Error);
  auto opened = open_autoencoder("identity");
  EXPECT_EQ(opened->latent_channels(), 3);
  EXPECT_TRUE(torch::equal(opened->decode(opened->encode(x)), x));
}

TEST(AutoencoderFlux, ShapesAndLatentScaleShift) {
  auto c = tiny_config();
  auto m = random_ae(c, 1);
  torch::NoGradGuard g;
  auto x = torch::rand({2, 3, 16, 12}) * 2 - 1;
  auto moments = m->encode_moments(x);
  EXPECT_EQ(moments.sizes(), (std::vector<int64_t>{2, 32, 8, 6}));
  auto mean = m->encode_mean(x);
  EXPECT_TRUE(torch::equal(mean, moments.narrow(1, 0, 16)));
  auto z = m->encode_latent(x);
  EXPECT_TRUE(torch::allclose(z, 0.7 * (mean + 0.2), 1e-6, 1e-6));
  EXPECT_GT(z.std().item<double>(), 1e-3);

  auto zr = torch::randn({1, 16, 5, 7});
  auto y = m->decode_latent(zr);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{1, 3, 10, 14}));
  EXPECT_TRUE(torch::allclose(y, m->decode_raw(zr / 0.7 - 0.2), 1e-6, 1e-6));
  EXPECT_FALSE(torch::allclose(y, m->decode_raw(zr), 1e-3, 1e-3));  // the scale/shift matters

  FluxAutoencoder ae(m);
  EXPECT_EQ(ae.latent_channels(), 16);
  EXPECT_EQ(ae.downsample_factor(), 2);
  EXPECT_TRUE(torch::equal(ae.encode(x), m->encode_latent(x)));
  EXPECT_THROW(m->encode_mean(torch::zeros({1, 3, 15, 16})), Error);  // not a multiple of /2
  EXPECT_THROW(m->decode_raw(torch::zeros({1, 4, 8, 8})), Error);
}

TEST(AutoencoderFlux, BackwardRunsThroughDecode) {
  auto m = random_ae(tiny_config(), 2);
  auto z = torch::randn({1, 16, 4, 4}).requires_grad_(true);
  auto loss = m->decode_latent(z).square().mean();
  loss.backward();
  ASSERT_TRUE(z.grad().defined());
  EXPECT_TRUE(torch::isfinite(z.grad()).all().item<bool>());
  EXPECT_GT(z.grad().abs().sum().item<double>(), 0.0);
  auto w = m->decoder->conv_in->weight;
  ASSERT_TRUE(w.grad().defined());
  EXPECT_GT(w.grad().abs().sum().item<double>(), 0.0);
  EXPECT_FALSE(m->encoder->conv_in->weight.grad().defined());  // decode does not touch the encoder
}

TEST(AutoencoderFlux, BflNamesAndDiffusersConversion) {
  auto c = tiny_config();
  auto m = random_ae(c, 3);
  auto state = module_state(*m);
  for (auto n : {"encoder.down.0.block.0.conv1.weight", "encoder.down.1.block.0.nin_shortcut.weight",
                 "encoder.down.0.downsample.conv.weight", "encoder.mid.attn_1.q.weight", "decoder.up.1.upsample.conv.bias",
                 "decoder.up.0.block.1.conv2.weight", "decoder.up.0.block.0.nin_shortcut.weight", "decoder.norm_out.bias"})
    EXPECT_TRUE(state.count(n)) << n;
  EXPECT_FALSE(state.count("encoder.down.1.downsample.conv.weight"));
  EXPECT_FALSE(state.count("decoder.up.0.upsample.conv.weight"));

  auto hf = vae_to_diffusers(state);
  EXPECT_TRUE(is_diffusers_vae(hf));
  EXPECT_FALSE(is_diffusers_vae(state));
  ASSERT_TRUE(hf.count("decoder.up_blocks.0.upsamplers.0.conv.weight"));  // BFL up.1 = diffusers up_blocks.0
  EXPECT_TRUE(torch::equal(hf["decoder.up_blocks.0.upsamplers.0.conv.weight"], state["decoder.up.1.upsample.conv.weight"]));
  EXPECT_TRUE(hf.count("decoder.up_blocks.1.resnets.0.conv_shortcut.weight"));
  EXPECT_EQ(hf["encoder.mid_block.attentions.0.to_q.weight"].dim(), 2);
  EXPECT_TRUE(hf.count("encoder.mid_block.attentions.0.to_out.0.bias"));
  EXPECT_TRUE(hf.count("decoder.conv_norm_out.weight"));
  EXPECT_EQ(hf.size(), state.size());

  auto back = vae_from_diffusers(hf);
  ASSERT_EQ(back.size(), state.size());
  for (auto& [k, v] : state) {
    ASSERT_TRUE(back.count(k)) << k;
    EXPECT_TRUE(torch::equal(back[k], v)) << k;
  }
  TensorMap bad = state;
  bad["decoder.something_else.weight"] = torch::zeros({1});
  EXPECT_THROW(vae_to_diffusers(bad), Error);
}

TEST(AutoencoderFlux, LoadsBflFileAndDiffusersDirectory) {
  auto c = tiny_config();
  c.block_out_channels = {32, 64};  // a config-less BFL file implies GroupNorm(32)
  c.norm_num_groups = 32;
  c.scaling_factor = 0.3611;
  c.shift_factor = 0.1159;
  auto m = random_ae(c, 4);
  auto dir = temp_dir("load");
  auto file = dir + "/ae.safetensors";
  save_tensors(file, module_state(*m));
  torch::NoGradGuard g;
  auto x = torch::rand({1, 3, 8, 8}) * 2 - 1;
  auto ref = m->encode_latent(x);

  auto bfl = load_flux_ae(file);  // no config: sizes inferred
  EXPECT_EQ(bfl->config.block_out_channels, c.block_out_channels);
  EXPECT_EQ(bfl->config.layers_per_block, 1);
  EXPECT_FALSE(bfl->config.use_quant_conv);
  EXPECT_FALSE(bfl->parameters().front().requires_grad());
  EXPECT_TRUE(torch::allclose(bfl->encode_latent(x), ref, 1e-6, 1e-6));
  auto hf_dir = dir + "/hf";
  std::filesystem::create_directories(hf_dir);
  save_tensors(hf_dir + "/diffusion_pytorch_model.safetensors", vae_to_diffusers(module_state(*m)));
  {
    auto j = c.to_diffusers_json();
    std::ofstream(hf_dir + "/config.json") << j.dump(2);
  }
  auto hf = load_flux_ae(hf_dir);
  EXPECT_EQ(hf->config.scaling_factor, 0.3611);
  EXPECT_TRUE(torch::allclose(hf->encode_latent(x), ref, 1e-6, 1e-6));
  auto z = torch::randn({1, 16, 3, 3});
  EXPECT_TRUE(torch::allclose(hf->decode_latent(z), m->decode_latent(z), 1e-6, 1e-6));

  try {
    load_flux_ae(dir + "/missing.safetensors");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.safetensors"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(AutoencoderFlux, TiledDecode) {
  auto m = random_ae(tiny_config(), 5);
  torch::NoGradGuard g;
  auto z = torch::randn({1, 16, 9, 7});
  auto full = m->decode_raw(z);
  // One tile covering everything (no overlap) is the plain decode.
  EXPECT_TRUE(torch::allclose(m->decode_raw_tiled(z, 9, 0.0), full, 1e-6, 1e-6));
  // Overlapping tiles: same shape, finite, and not the plain decode (each tile sees only its own context).
  auto tiled = m->decode_raw_tiled(z, 4, 0.25);
  EXPECT_EQ(tiled.sizes(), full.sizes());
  EXPECT_TRUE(torch::isfinite(tiled).all().item<bool>());
  EXPECT_FALSE(torch::allclose(tiled, full, 1e-4, 1e-4));  // the tiles really are decoded separately
  EXPECT_THROW(m->decode_raw_tiled(z, 1, 0.5), Error);    // stride 0

  FluxAutoencoder ae(m);
  ae.set_tiling(4, 0.25);
  auto lat = torch::randn({1, 16, 9, 7});
  EXPECT_TRUE(torch::allclose(ae.decode(lat), m->decode_raw_tiled(lat / 0.7 - 0.2, 4, 0.25), 1e-6, 1e-6));
  auto small = torch::randn({1, 16, 4, 3});  // fits one tile: plain decode
  EXPECT_TRUE(torch::equal(ae.decode(small), m->decode_latent(small)));
  ae.set_tiling(0);
  EXPECT_TRUE(torch::equal(ae.decode(lat), m->decode_latent(lat)));
}

// ---- VAE names: one rule table (name_conversion.cpp) serves both directions; these tests hold it to that.

namespace {

// Three levels of three widths, so that a decoder level written at the wrong place also has the wrong shape, and
// quant convs, so that every rule of the table is used.
FluxAE three_level_ae(uint64_t seed) {
  AutoencoderConfig c;
  c.block_out_channels = {8, 16, 32};
  c.layers_per_block = 1;
  c.latent_channels = 4;
  c.norm_num_groups = 4;
  c.use_quant_conv = true;
  c.use_post_quant_conv = true;
  return random_ae(c, seed);
}

// Same names, and under each name a tensor of the same shape and values.
void expect_same_tensors(const TensorMap& got, const TensorMap& want, const std::string& what) {
  EXPECT_EQ(got.size(), want.size()) << what;
  for (auto& [name, tensor] : want) {
    auto it = got.find(name);
    if (it == got.end()) {
      ADD_FAILURE() << what << ": no " << name;
      continue;
    }
    EXPECT_EQ(it->second.sizes(), tensor.sizes()) << what << ": " << name;
    EXPECT_TRUE(torch::equal(it->second, tensor)) << what << ": " << name;
  }
}

}  // namespace

TEST(VaeNames, BflToDiffusersToBflIsTheIdentity) {
  auto bfl = module_state(*three_level_ae(11));
  ASSERT_TRUE(bfl.count("quant_conv.weight") && bfl.count("post_quant_conv.bias"));
  auto hf = vae_to_diffusers(bfl);
  // A few names pinned to diffusers' layout: a round trip alone would not see a rule that is wrong both ways.
  auto pinned = [&](const std::string& hf_name, const std::string& bfl_name) {
    ASSERT_TRUE(hf.count(hf_name)) << hf_name;
    EXPECT_TRUE(torch::equal(hf.at(hf_name).flatten(), bfl.at(bfl_name).flatten())) << hf_name;
  };
  pinned("decoder.up_blocks.0.upsamplers.0.conv.weight", "decoder.up.2.upsample.conv.weight");  // reversed levels
  pinned("decoder.up_blocks.2.resnets.1.conv1.weight", "decoder.up.0.block.1.conv1.weight");
  pinned("decoder.up_blocks.1.resnets.0.conv_shortcut.bias", "decoder.up.1.block.0.nin_shortcut.bias");
  pinned("encoder.down_blocks.1.downsamplers.0.conv.weight", "encoder.down.1.downsample.conv.weight");
  pinned("encoder.mid_block.resnets.1.norm2.weight", "encoder.mid.block_2.norm2.weight");
  pinned("decoder.mid_block.attentions.0.to_out.0.weight", "decoder.mid.attn_1.proj_out.weight");
  pinned("decoder.mid_block.attentions.0.group_norm.bias", "decoder.mid.attn_1.norm.bias");
  pinned("encoder.conv_norm_out.weight", "encoder.norm_out.weight");
  EXPECT_EQ(hf.at("encoder.mid_block.attentions.0.to_q.weight").sizes(), (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(bfl.at("encoder.mid.attn_1.q.weight").sizes(), (std::vector<int64_t>{32, 32, 1, 1}));
  expect_same_tensors(vae_from_diffusers(hf), bfl, "BFL -> diffusers -> BFL");
}

TEST(VaeNames, DiffusersToBflToDiffusersIsTheIdentity) {
  auto hf = vae_to_diffusers(module_state(*three_level_ae(12)));
  ASSERT_TRUE(is_diffusers_vae(hf));
  expect_same_tensors(vae_to_diffusers(vae_from_diffusers(hf)), hf, "diffusers -> BFL -> diffusers");
}

TEST(VaeNames, LegacyAttentionNamesAreRead) {
  auto bfl = module_state(*three_level_ae(13));
  const std::vector<std::pair<std::string, std::string>> legacy_of = {
      {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}};
  TensorMap legacy;
  int renamed = 0;
  for (auto& [hf_name, tensor] : vae_to_diffusers(bfl)) {
    std::string name = hf_name;
    for (auto& [now, old] : legacy_of) {
      auto at = name.find(now);  // these leaves occur only in the mid-block attention
      if (at == std::string::npos) continue;
      name.replace(at, now.size(), old);
      ++renamed;
    }
    legacy[name] = tensor;
  }
  EXPECT_EQ(renamed, 16);  // {encoder, decoder} x {q, k, v, out} x {weight, bias}
  ASSERT_TRUE(legacy.count("decoder.mid_block.attentions.0.proj_attn.weight"));
  expect_same_tensors(vae_from_diffusers(legacy), bfl, "legacy diffusers -> BFL");
}

TEST(VaeNames, UnknownNames) {
  auto bfl = module_state(*three_level_ae(14));
  bfl["decoder.up.1.block.0.gate.weight"] = torch::zeros({2});
  try {
    vae_to_diffusers(bfl);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'decoder.up.1.block.0.gate.weight'"), std::string::npos) << e.what();
  }
  // diffusers -> BFL keeps what it does not know, so that load_weights can report it by its own name.
  bfl.erase("decoder.up.1.block.0.gate.weight");
  auto hf = vae_to_diffusers(bfl);
  hf["encoder.down_blocks.0.extra.weight"] = torch::ones({3});
  auto back = vae_from_diffusers(hf);
  ASSERT_TRUE(back.count("encoder.down_blocks.0.extra.weight"));
  EXPECT_EQ(back.size(), bfl.size() + 1);
}
