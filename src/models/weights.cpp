#include "models/weights.h"

#include <set>

#include <torch/torch.h>

#include "core/error.h"
#include "models/hf_config.h"

namespace iomm {

static std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

LoadReport load_weights(torch::nn::Module& module, const TensorMap& tensors, const std::string& source,
                        const std::vector<std::string>& allow_missing, bool allow_unexpected) {
  LoadReport r;
  std::set<std::string> used;
  torch::NoGradGuard no_grad;
  auto assign = [&](const std::string& name, at::Tensor& target) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      if (std::find(allow_missing.begin(), allow_missing.end(), name) == allow_missing.end())
        r.missing.push_back(name);
      return;
    }
    used.insert(name);
    if (it->second.sizes() != target.sizes()) {
      r.mis_shaped.push_back(fmt::format("{}: checkpoint {} vs model {}", name, shape_str(it->second.sizes()),
                                         shape_str(target.sizes())));
      return;
    }
    target.copy_(it->second);
  };
  for (auto& p : module.named_parameters(/*recurse=*/true)) assign(p.key(), p.value());
  for (auto& b : module.named_buffers(/*recurse=*/true)) assign(b.key(), b.value());
  for (auto& [name, t] : tensors)
    if (!used.count(name)) r.unexpected.push_back(name);

  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    size_t shown = std::min<size_t>(v.size(), 20);
    for (size_t i = 0; i < shown; ++i) s += "\n    " + v[i];
    if (v.size() > shown) s += fmt::format("\n    ... and {} more", v.size() - shown);
    return s;
  };
  bool bad = !r.missing.empty() || !r.mis_shaped.empty() || (!allow_unexpected && !r.unexpected.empty());
  if (bad) {
    std::string msg = fmt::format("{}: the checkpoint does not match the model config", source);
    if (!r.missing.empty()) msg += fmt::format("\n  missing ({}):{}", r.missing.size(), list(r.missing));
    if (!r.mis_shaped.empty()) msg += fmt::format("\n  mis-shaped ({}):{}", r.mis_shaped.size(), list(r.mis_shaped));
    if (!allow_unexpected && !r.unexpected.empty())
      msg += fmt::format("\n  unexpected ({}):{}", r.unexpected.size(), list(r.unexpected));
    msg += "\n  check that config.json belongs to these weights";
    fail("{}", msg);
  }
  return r;
}

void freeze(torch::nn::Module& module) {
  for (auto& p : module.parameters(/*recurse=*/true)) p.set_requires_grad(false);
}

TensorMap module_state(const torch::nn::Module& module) {
  TensorMap out;
  for (auto& p : module.named_parameters(true)) out[p.key()] = p.value().detach().cpu().clone();
  for (auto& b : module.named_buffers(true)) out[b.key()] = b.value().detach().cpu().clone();
  return out;
}

TensorMap module_tensors(const torch::nn::Module& module, const std::string& prefix) {
  TensorMap out;
  for (auto& p : module.named_parameters(true)) out[prefix + p.key()] = p.value().detach();
  for (auto& b : module.named_buffers(true)) out[prefix + b.key()] = b.value().detach();
  return out;
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (auto& p : module.parameters(true)) n += p.numel();
  return n;
}

NamedTensors trainable_parameters(const torch::nn::Module& module, const std::string& prefix) {
  NamedTensors out;
  for (auto& item : module.named_parameters(/*recurse=*/true))
    if (item.value().requires_grad()) out.emplace_back(prefix + item.key(), item.value());
  return out;
}

void load_frozen(torch::nn::Module& module, const TensorMap& tensors, const std::string& source,
                 const std::string& device, const std::string& dtype, bool trainable,
                 const std::vector<std::string>& allow_missing) {
  module.to(torch::Device(device), dtype_from_name(dtype));
  load_weights(module, tensors, source, allow_missing);
  if (!trainable) freeze(module);
  module.eval();
}

}  // namespace iomm
