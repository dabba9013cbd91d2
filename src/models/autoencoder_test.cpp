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
