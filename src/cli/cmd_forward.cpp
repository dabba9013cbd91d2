// `iomm forward`: runs one registered component on tensors from a safetensors file and writes its outputs to
// another — the entry point the conformance tests compare with the reference implementations.
#include "cli/command.h"
#include "core/error.h"
#include "core/tensor_io.h"
#include "models/components.h"

namespace {

struct Args {
  std::string component, inputs, out;
  iomm::ForwardOptions opt;
  bool list = false;
};

iomm::cli::Register reg{{"forward", "Run one model component on tensors from a safetensors file (for conformance tests)",
  [](CLI::App& app) {
    auto a = std::make_shared<Args>();
    app.add_option("--component", a->component, "Component name (see --list)");
    app.add_option("--model", a->opt.model_dir, "Model directory (config.json + *.safetensors)");
    app.add_option("--inputs", a->inputs, "Input tensors (.safetensors), named like the reference forward() args")
        ->check(CLI::ExistingFile);
    app.add_option("--out", a->out, "Where to write the outputs (.safetensors)");
    app.add_option("--device", a->opt.device, "cpu or cuda[:N]")->capture_default_str();
    app.add_option("--dtype", a->opt.dtype, "Compute dtype")
        ->check(CLI::IsMember({"float32", "bfloat16"}))
        ->capture_default_str();
    app.add_flag("--list", a->list, "List the components with their inputs and outputs");
    return [a] {
      if (a->list) {
        for (auto& c : iomm::forward_components()) {
          auto join = [](const std::vector<std::string>& v) {
            std::string s;
            for (auto& x : v) s += (s.empty() ? "" : ", ") + x;
            return s;
          };
          fmt::print("{}\n  {}\n  inputs: {}\n  optional: {}\n  outputs: {}\n", c.name, c.help, join(c.inputs),
                     join(c.optional_inputs), join(c.outputs));
        }
        return 0;
      }
      if (a->component.empty() || a->inputs.empty() || a->out.empty())
        iomm::fail("forward needs --component, --inputs and --out (and usually --model); see iomm forward --help");
      const auto& comp = iomm::find_forward_component(a->component);
      auto inputs = iomm::load_tensors(a->inputs);
      auto outputs = iomm::run_forward(comp, a->opt, inputs, a->inputs);
      iomm::save_tensors(a->out, outputs, {{"component", comp.name}, {"model", a->opt.model_dir}});
      return 0;
    };
  }}};

}  // namespace
