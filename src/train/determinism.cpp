#include "train/determinism.h"

#include <cstdlib>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "core/log.h"

namespace iomm {

using json = nlohmann::json;

void set_deterministic(bool on) {
  auto& ctx = at::globalContext();
  ctx.setDeterministicAlgorithms(on, /*warn_only=*/false);
  ctx.setDeterministicCuDNN(on);
  ctx.setDeterministicMkldnn(on);
  if (on) ctx.setBenchmarkCuDNN(false);
  if (on && !std::getenv("CUBLAS_WORKSPACE_CONFIG")) ::setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
}

json determinism_fingerprint() {
  return {{"deterministic", at::globalContext().deterministicAlgorithms()},
          {"intra_op_threads", at::get_num_threads()},
          {"torch", fmt::format("{}.{}.{}", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH)},
          {"cuda_devices", torch::cuda::device_count()}};
}

std::vector<std::string> determinism_mismatches(const json& saved) {
  std::vector<std::string> out;
  json now = determinism_fingerprint();
  auto differs = [&](const char* key) { return saved.contains(key) && saved[key] != now[key]; };
  if (differs("deterministic"))
    out.push_back(fmt::format("deterministic mode was {} when saved and is {} now", saved["deterministic"].dump(),
                              now["deterministic"].dump()));
  if (differs("intra_op_threads"))
    out.push_back(fmt::format("the run used {} intra-op threads and this process uses {} (CPU reductions split "
                              "by thread count); set OMP_NUM_THREADS={} to match",
                              saved["intra_op_threads"].dump(), now["intra_op_threads"].dump(),
                              saved["intra_op_threads"].dump()));
  if (differs("torch"))
    out.push_back(fmt::format("torch was {} when saved and is {} now", saved["torch"].dump(), now["torch"].dump()));
  if (differs("cuda_devices"))
    out.push_back(fmt::format("{} CUDA devices were visible when saved and {} now", saved["cuda_devices"].dump(),
                              now["cuda_devices"].dump()));
  return out;
}

void warn_determinism_mismatches(const json& saved, const std::string& source) {
  for (const auto& m : determinism_mismatches(saved))
    spdlog::warn("{}: {}; the resumed run is valid but will not match an uninterrupted run bit for bit", source, m);
}

}  // namespace iomm
