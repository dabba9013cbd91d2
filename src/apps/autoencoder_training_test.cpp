#include "apps/autoencoder_training.h"

#include <cmath>
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "data/image_pool.h"
#include "models/hf_config.h"
#include "testing/tiny_fixtures.h"
#include "world/corpus.h"

namespace iomm {
namespace {

constexpr const char* kTinyAutoencoder = R"(
[autoencoder]
block_out_channels = [16, 32]
layers_per_block = 1
latent_channels = 4
norm_num_groups = 8
mid_attention = true
[train]
stage = "autoencoder"
steps = 150
batch_size = 16
kl_weight = 1e-4
stats_samples = 128
threads = 1
log_every = 50
checkpoint_every = 0
[data]
size = 32
holdout = 48
[optim]
lr = 2e-3
warmup_steps = 10
)";

std::string tiny_pool() {
  static const std::string dir = [] {
    auto d = fixtures::temp_dir("ae-pool");
    world::CorpusOptions co;
    co.out = d;
    co.image_only = 240;
    co.captioned = 0;
    co.progress = false;
    world::make_corpus(co);
    return d + "/image";
  }();
  return dir;
}

// kTinyAutoencoder's architecture.
AutoencoderConfig tiny_ae() {
  AutoencoderConfig c;
  c.block_out_channels = {16, 32};
  c.layers_per_block = 1;
  c.latent_channels = 4;
  c.norm_num_groups = 8;
  return c;
}

Config tiny_config(const std::string& pool) {
  auto cfg = Config::parse(kTinyAutoencoder, "tiny-autoencoder.toml");
  cfg.set("data.images=\"" + pool + "\"");
  return cfg;
}

// The whole stage: it learns to reconstruct held-out scenes, and the export's latents have the unit statistics the
// generator is promised (measured scale and shift), loaded the way `model.autoencoder = DIR` loads them.
TEST(AutoencoderTraining, LearnsHeldOutScenesAndExportsUnitVarianceLatents) {
  const auto pool = tiny_pool();
  auto images = data::to_model_range(data::load_image_pool(pool, 32, false, 0, false).images);
  torch::manual_seed(0);
  FluxAE untrained(tiny_ae());
  const double psnr0 = reconstruction_psnr(*untrained, images.slice(0, 192));  // the 48 held-out images

  auto cfg = tiny_config(pool);
  auto run = fixtures::temp_dir("ae-run");
  auto r = train_autoencoder(cfg, run, false);
  ASSERT_TRUE(r.finished);
  const double psnr = r.eval["held_out_psnr_db"].get<double>();
  EXPECT_EQ(r.eval["held_out_images"].get<int64_t>(), 48);
  EXPECT_EQ(r.eval["train_images"].get<int64_t>(), 192);
  // Measured: trained 26.3 dB after 150 steps.
  EXPECT_GT(psnr, 18.0) << "untrained " << psnr0;
  EXPECT_GT(psnr, psnr0 + 8.0);
  EXPECT_TRUE(std::filesystem::exists(r.model_dir + "/diffusion_pytorch_model.safetensors"));
  auto saved = read_json_file(r.model_dir + "/config.json");
  EXPECT_EQ(saved["_class_name"], "AutoencoderKL");
  EXPECT_EQ(saved["latent_channels"], 4);

  auto ae = open_autoencoder(r.model_dir);
  torch::NoGradGuard no_grad;
  auto z = ae->encode(images.slice(0, 0, 128)).to(torch::kFloat64);  // the stats_samples it was measured on
  EXPECT_EQ(z.size(1), 4);
  EXPECT_EQ(z.size(2), 16);
  EXPECT_NEAR(z.mean().item<double>(), 0.0, 1e-4);
  EXPECT_NEAR(z.std(false).item<double>(), 1.0, 1e-4);
  EXPECT_NEAR(saved["scaling_factor"].get<double>(), r.eval["latent_scale"].get<double>(), 1e-9);
  // decode(encode(x)) through the scaled latents is the reconstruction the PSNR measured.
  auto held = images.slice(0, 192);  // the pool's last data.holdout images
  auto y = ae->decode(ae->encode(held)).clamp(-1, 1);
  const double mse = ((y - held) / 2).pow(2).mean().item<double>();
  EXPECT_NEAR(10 * std::log10(1 / mse), psnr, 0.05);
}

TEST(AutoencoderTraining, ACollapsedEncoderHasNoLatentScale) {
  FluxAE m(tiny_ae());
  {
    torch::NoGradGuard no_grad;
    for (auto& p : m->parameters()) p.zero_();
  }
  auto x = torch::rand({4, 3, 32, 32}) * 2 - 1;
  try {
    measure_latent_stats(*m, x);
    FAIL() << "a constant encoder must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("collapsed"), std::string::npos) << e.what();
  }
}

TEST(AutoencoderTraining, ConfigErrorsNameTheKeyAndTheFix) {
  auto no_pool = Config::parse(kTinyAutoencoder, "tiny-autoencoder.toml");
  try {
    AutoencoderTrainingConfig::from_config(no_pool);
    FAIL() << "data.images is required";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.images"), std::string::npos) << e.what();
  }
  auto odd = tiny_config("somewhere");
  odd.set("data.size=33");
  try {
    AutoencoderTrainingConfig::from_config(odd);
    FAIL() << "33 px is not a multiple of the factor 2";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.size = 33"), std::string::npos) << e.what();
  }
  try {
    open_autoencoder("learned");
    FAIL() << "\"learned\" outside the demo must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("iomm train --config configs/world/autoencoder.toml"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace iomm
