// The TOML of a tiny IOMM model over fixtures::tiny_mllm_dir() (16 px pixel space, 4 queries), for unit tests.
#pragma once
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
