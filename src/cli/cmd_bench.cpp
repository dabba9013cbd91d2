// `iomm bench train|generate|component`: speed of the real training step, of generation and of one component
// (apps/bench.h). Prints a summary, or the JSON result with --json; --dump DIR writes what the PyTorch peer
// (bench/peer/) needs to run the same computation.
#include <memory>

#include <fmt/format.h>

#include "apps/bench.h"
#include "cli/command.h"
#include "core/config.h"
#include "core/tensor_io.h"

namespace {

struct Args {
  iomm::cli::ConfigArgs config;
  iomm::BenchOptions bench;
  iomm::GenerateBenchOptions gen;
  iomm::ForwardOptions forward;
  std::string component, inputs;
  bool backward = false, json = false, no_perturb = false;
};

void add_common(CLI::App* app, Args& a, const char* steps_help) {
  app->add_option("--warmup", a.bench.warmup, "Untimed steps first")->capture_default_str()->check(CLI::NonNegativeNumber);
  app->add_option("--steps", a.bench.steps, steps_help)->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--threads", a.bench.threads, "torch intra-op threads (0: the config's train.threads, else all cores)")
      ->capture_default_str();
  app->add_option("--peak-tflops", a.bench.peak_tflops, "The device's dense peak for MFU (default: H100/H200 bf16)")
      ->capture_default_str();
  app->add_flag("--json", a.json, "Print the result as one JSON object");
  app->add_option("--profile", a.bench.profile, "Write a Chrome trace of the timed steps (torch's profiler)");
}

void add_model_source(CLI::App* app, Args& a) {
  a.config.add_to(*app);
  app->add_option("--dump", a.bench.dump, "Write the model at step 0, the inputs and the result here (for the peer)");
  app->add_flag("--no-perturb", a.no_perturb, "Keep the fresh model's adaLN-Zero init (default: non-trivial weights)");
}

int print(const nlohmann::json& r, bool json) {
  if (json) fmt::print("{}\n", r.dump());
  else fmt::print("{}", iomm::format_bench(r));
  return 0;
}

iomm::cli::Register reg{{"bench", "Time the training step, generation or one component (with FLOPs, memory, MFU)",
  [](CLI::App& app) {
    auto a = std::make_shared<Args>();
    app.require_subcommand(1);
    auto* train = app.add_subcommand("train", "Warm-up, then timed steps of the real training step on one batch");
    add_model_source(train, *a);
    add_common(train, *a, "Timed steps");
    auto* gen = app.add_subcommand("generate", "Warm-up, then timed generate() calls (true CFG)");
    add_model_source(gen, *a);
    add_common(gen, *a, "Timed calls");
    gen->add_option("--model", a->gen.model_dir, "A trained model directory (default: a fresh model from --config)");
    gen->add_option("--images", a->gen.images, "Images per call")->capture_default_str()->check(CLI::PositiveNumber);
    gen->add_option("--sampler-steps", a->gen.steps, "Sampler steps")->capture_default_str()->check(CLI::PositiveNumber);
    gen->add_option("--cfg-scale", a->gen.cfg_scale, "Guidance scale (1 = none)")->capture_default_str();
    gen->add_option("--sampler", a->gen.sampler, "euler or dpmpp_2m")
        ->check(CLI::IsMember({"euler", "dpmpp_2m"}))
        ->capture_default_str();
    gen->add_option("--shift", a->gen.shift, "Static time shift")->capture_default_str()->check(CLI::PositiveNumber);
    gen->add_option("--seed", a->gen.seed, "Noise seed of image 0")->capture_default_str();
    auto* comp = app.add_subcommand("component", "Timed forward (and backward) of one component (iomm forward --list)");
    comp->add_option("name", a->component, "Component name")->required();
    comp->add_option("--model", a->forward.model_dir, "Model directory");
    comp->add_option("--inputs", a->inputs, "Input tensors (.safetensors)")->required()->check(CLI::ExistingFile);
    comp->add_option("--device", a->forward.device, "cpu or cuda[:N]")->capture_default_str();
    comp->add_option("--dtype", a->forward.dtype, "Compute dtype")
        ->check(CLI::IsMember({"float32", "bfloat16"}))
        ->capture_default_str();
    comp->add_flag("--backward", a->backward, "Time forward + backward (into parameters and inputs)");
    add_common(comp, *a, "Timed calls");
    return [a, train, gen]() -> int {
      a->bench.perturb = !a->no_perturb;
      if (train->parsed()) {
        auto cfg = a->config.load();
        return print(iomm::bench_train(cfg, a->bench), a->json);
      }
      if (gen->parsed()) {
        auto cfg = a->config.load();
        return print(iomm::bench_generate(cfg, a->bench, a->gen), a->json);
      }
      auto inputs = iomm::load_tensors(a->inputs);
      return print(iomm::bench_component(a->component, a->forward, inputs, a->backward, a->bench), a->json);
    };
  }}};

}  // namespace
