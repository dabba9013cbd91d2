// Loading a module from checkpoint tensors is a dictionary walk: module names equal checkpoint names (after the
// one name conversion step in name_conversion.h), so every parameter is looked up by its own name.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace torch::nn {
class Module;
}

namespace iomm {

using TensorMap = std::map<std::string, at::Tensor>;
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;  // ordered: optimizer state follows it

struct LoadReport {
  std::vector<std::string> missing;     // module parameter with no tensor
  std::vector<std::string> unexpected;  // tensor with no parameter
  std::vector<std::string> mis_shaped;  // "name: checkpoint [a, b] vs model [c, d]"
};

// Copies `tensors` into the parameters and persistent buffers of `module` (converting dtype, keeping each
// parameter's dtype and device). Fails with the full lists of missing, unexpected and mis-shaped tensors unless
// they are allowed: `allow_missing` lists parameter names that may be absent (e.g. an optional LM head).
LoadReport load_weights(torch::nn::Module& module, const TensorMap& tensors, const std::string& source,
                        const std::vector<std::string>& allow_missing = {}, bool allow_unexpected = false);

// Freezes a module: no parameter requires grad, so no weight gradient memory is ever allocated.
void freeze(torch::nn::Module& module);

// The one way a model is brought up from checkpoint tensors: cast to `device`/`dtype` first (a bf16 model is never
// held in fp32), copy `tensors` in (load_weights), freeze unless `trainable`, eval mode.
void load_frozen(torch::nn::Module& module, const TensorMap& tensors, const std::string& source,
                 const std::string& device, const std::string& dtype, bool trainable = false,
                 const std::vector<std::string>& allow_missing = {});

// Every parameter and buffer of `module` by name (cloned to CPU), for export.
TensorMap module_state(const torch::nn::Module& module);
// The same tensors, not copied (detached views, names prefixed with `prefix`), e.g. for fingerprint_tensors.
TensorMap module_tensors(const torch::nn::Module& module, const std::string& prefix = "");

// Named parameters of `module` that require grad, each name prefixed with `prefix` (e.g. "rqa.").
NamedTensors trainable_parameters(const torch::nn::Module& module, const std::string& prefix = "");

// Number of parameter elements.
int64_t count_parameters(const torch::nn::Module& module);

}  // namespace iomm
