// The `iomm forward` component registry: each model issue plugs a component in here, so that the conformance
// tests can run any piece of iomm on tensors from a safetensors file and compare with the reference.
// Tensor names are the reference implementation's forward() argument and output names
// (e.g. diffusers: hidden_states, encoder_hidden_states, timestep -> sample).
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace iomm {

using TensorMap = std::map<std::string, at::Tensor>;

struct ForwardOptions {
  std::string model_dir;            // a Hugging Face-style directory (config.json + safetensors), or a name
  std::string device = "cpu";       // "cpu" or "cuda[:N]"
  std::string dtype = "float32";    // "float32" or "bfloat16": the compute dtype
};

struct ForwardComponent {
  std::string name;
  std::string help;
  std::vector<std::string> inputs;           // required
  std::vector<std::string> optional_inputs;  // may be absent
  std::vector<std::string> outputs;          // always produced
  std::function<TensorMap(const ForwardOptions&, const TensorMap&)> run;
};

// Every registered component, sorted by name.
const std::vector<ForwardComponent>& forward_components();
// Fails with the list of known components when `name` is unknown.
const ForwardComponent& find_forward_component(const std::string& name);
// Checks the inputs (missing or unexpected names fail with the lists), runs the component without grad, and checks
// that every declared output was produced. `inputs_source` names the input file in messages.
TensorMap run_forward(const ForwardComponent& c, const ForwardOptions& opt, const TensorMap& inputs,
                      const std::string& inputs_source = "inputs");

}  // namespace iomm
