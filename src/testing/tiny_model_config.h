// The TOML of a tiny IOMM model over fixtures::tiny_mllm_dir() (16 px pixel space, 4 queries), for unit tests.
#pragma once
#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "testing/tiny_fixtures.h"

namespace iomm::fixtures {

inline std::string tiny_model_toml() {
  return fmt::format(R"([model]
mllm = "{}"
resolution = 16
[generator]
hidden_size = 32
num_heads = 2
depth = 1
depth_single_blocks = 1
axes_dim = [4, 6, 6]
latent_channels = 3
patch_size = 4
[conditioner]
num_queries = 4
num_heads = 4
mask_ratio = 0.5
)",
                     tiny_mllm_dir());
}

// The tiny model over a tiny FLUX autoencoder (tiny_flux_ae_dir): `resolution` px -> (R/2)² x 16 latents, patch 2.
inline std::string tiny_flux_model_toml(const std::string& ae_dir, int64_t resolution = 16) {
  auto toml = tiny_model_toml();
  toml.replace(toml.find("resolution = 16"), 15, fmt::format("resolution = {}\nautoencoder = \"{}\"", resolution, ae_dir));
  toml.replace(toml.find("latent_channels = 3"), 19, "latent_channels = 16");
  toml.replace(toml.find("patch_size = 4"), 14, "patch_size = 2");
  return toml;
}

// The same model with IOMM-XL's generator, Z-Image's S3-DiT, at a tiny size (cap_feat_dim follows the MLLM).
inline std::string tiny_zimage_model_toml() {
  auto toml = tiny_model_toml();
  auto g = toml.find("[generator]"), k = toml.find("[conditioner]");
  return toml.replace(g, k - g, R"([generator]
arch = "zimage"
dim = 32
n_heads = 2
n_layers = 1
n_refiner_layers = 1
axes_dims = [4, 6, 6]
axes_lens = [64, 16, 16]
in_channels = 3
patch_size = 4
)");
}

}  // namespace iomm::fixtures
