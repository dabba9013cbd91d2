// `iomm convert`: rewrites a generator checkpoint in another layout — diffusers FluxTransformer2DModel (loads in
// diffusers' pipelines) or BFL's original FLUX names (iomm's own).
#include "cli/command.h"
#include "core/error.h"
#include "models/mmdit.h"
#include "models/weights.h"

namespace {

struct Args {
  std::string component = "mmdit", model, out, format = "diffusers";
};

iomm::cli::Register reg{{"convert", "Convert a generator (MM-DiT) checkpoint between diffusers and BFL (FLUX) names",
  [](CLI::App& app) {
    auto a = std::make_shared<Args>();
    app.add_option("--component", a->component, "What to convert")
        ->check(CLI::IsMember({"mmdit"}))
        ->capture_default_str();
    app.add_option("--model", a->model, "Input: model directory or .safetensors file (diffusers or BFL names)")
        ->required();
    app.add_option("--out", a->out, "Output directory")->required();
    app.add_option("--format", a->format,
                   "diffusers: config.json + diffusion_pytorch_model.safetensors; bfl: config.json (FluxParams) + "
                   "model.safetensors")
        ->check(CLI::IsMember({"diffusers", "bfl"}))
        ->capture_default_str();
    return [a] {
      auto m = iomm::load_mmdit(a->model, "cpu", "float32");
      iomm::save_mmdit(m, a->out, a->format);
      fmt::print("wrote {} ({} parameters, {} format)\n", a->out, iomm::count_parameters(*m), a->format);
      return 0;
    };
  }}};

}  // namespace
