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

// A component with its model loaded: `run` may be called many times (iomm bench component times it).
struct LoadedComponent {
  std::vector<at::Tensor> parameters;  // the model's (empty for a pure function): what a backward would train
  std::function<TensorMap(const TensorMap&)> run;
};

struct ForwardComponent {
  std::string name;
  std::string help;
  std::vector<std::string> inputs;           // required
  std::vector<std::string> optional_inputs;  // may be absent
  std::vector<std::string> outputs;          // always produced
  std::function<LoadedComponent(const ForwardOptions&)> load;
};

// Every registered component, sorted by name.
const std::vector<ForwardComponent>& forward_components();
// Fails with the list of known components when `name` is unknown.
const ForwardComponent& find_forward_component(const std::string& name);
// Fails, listing the names, when `inputs` lacks a required input or has one the component does not take.
void check_component_inputs(const ForwardComponent& c, const TensorMap& inputs, const std::string& inputs_source);
// Fails when `outputs` lacks a declared output (a bug in iomm).
void check_component_outputs(const ForwardComponent& c, const TensorMap& outputs);
// Checks the inputs, loads the model, runs the component once without grad, and checks its outputs.
// `inputs_source` names the input file in messages.
TensorMap run_forward(const ForwardComponent& c, const ForwardOptions& opt, const TensorMap& inputs,
                      const std::string& inputs_source = "inputs");

}  // namespace iomm
