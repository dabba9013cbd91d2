#include "models/components.h"

#include <torch/torch.h>

#include "core/error.h"
#include "models/autoencoder.h"
#include "models/internvit.h"
#include "models/internvl.h"
#include "models/internvl_preprocess.h"
#include "models/mmdit.h"
#include "models/qwen2.h"
#include "models/zimage_dit.h"

namespace iomm {

static std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s.empty() ? "(none)" : s;
}

const std::vector<ForwardComponent>& forward_components() {
  // One line per component; the model files own their forward functions.
  static const std::vector<ForwardComponent> all = [] {
    std::vector<ForwardComponent> v = {
        qwen2_forward_component(),
        internvit_forward_component(),
        internvl_forward_component(),
        internvl_tiles_forward_component(),
        mmdit_forward_component(),
        vae_encode_forward_component(),
        vae_decode_forward_component(),
        zimage_forward_component(),
    };
    std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.name < b.name; });
    return v;
  }();
  return all;
}

const ForwardComponent& find_forward_component(const std::string& name) {
  for (auto& c : forward_components())
    if (c.name == name) return c;
  std::vector<std::string> names;
  for (auto& c : forward_components()) names.push_back(c.name);
  fail("unknown component '{}'; known components: {}", name, join(names));
}

void check_component_inputs(const ForwardComponent& c, const TensorMap& inputs, const std::string& source) {
  std::vector<std::string> missing, unexpected;
  for (auto& n : c.inputs)
    if (!inputs.count(n)) missing.push_back(n);
  for (auto& [n, t] : inputs) {
    bool known = std::find(c.inputs.begin(), c.inputs.end(), n) != c.inputs.end() ||
                 std::find(c.optional_inputs.begin(), c.optional_inputs.end(), n) != c.optional_inputs.end();
    if (!known) unexpected.push_back(n);
  }
  if (!missing.empty() || !unexpected.empty())
    fail("{}: component '{}' takes inputs [{}] and optionally [{}]; missing: {}; unexpected: {}", source, c.name,
         join(c.inputs), join(c.optional_inputs), join(missing), join(unexpected));
}

void check_component_outputs(const ForwardComponent& c, const TensorMap& out) {
  for (auto& n : c.outputs)
    if (!out.count(n)) fail("component '{}' did not produce its output '{}' (a bug in iomm)", c.name, n);
}

TensorMap run_forward(const ForwardComponent& c, const ForwardOptions& opt, const TensorMap& inputs,
                      const std::string& source) {
  check_component_inputs(c, inputs, source);
  torch::NoGradGuard no_grad;
  TensorMap out = c.load(opt).run(inputs);
  check_component_outputs(c, out);
  return out;
}

}  // namespace iomm
