// `iomm version`: what this binary was built with (torch, CUDA), for bug reports.
#include <torch/torch.h>

#include "cli/command.h"

namespace {
iomm::cli::Register reg{{"version", "Print the iomm, libtorch and CUDA versions this binary was built with",
  [](CLI::App&) {
    return [] {
      fmt::print("iomm {}\nlibtorch {}\ncuda build: {}\ncuda available: {}\n", IOMM_VERSION, TORCH_VERSION,
#ifdef IOMM_WITH_CUDA
                 "yes",
#else
                 "no",
#endif
                 torch::cuda::is_available() ? "yes" : "no");
      return 0;
    };
  }}};
}  // namespace
