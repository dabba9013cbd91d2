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

}  // namespace iomm::fixtures
