// `iomm schedule`: prints the sigma / timestep schedule a sampler would use (for conformance tests against
// diffusers' FlowMatchEulerDiscreteScheduler and for inspecting shifts).
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "core/error.h"
#include "diffusion/flow_matching.h"

namespace {

struct Args {
  std::string kind = "diffusers";
  int64_t steps = 28;
  double shift = 1.0;
  bool dynamic = false;
  double mu = 0.0;
  bool has_mu = false;
  int64_t image_seq_len = 0;
  bool json = false;
};

iomm::cli::Register reg{{"schedule", "Print a flow-matching sigma schedule (diffusers FlowMatchEuler, FLUX, static shift)",
  [](CLI::App& app) {
    auto a = std::make_shared<Args>();
    app.add_option("--kind", a->kind,
                   "diffusers: FlowMatchEulerDiscreteScheduler.set_timesteps(steps[, mu]); flux-pipeline: what "
                   "diffusers' FluxPipeline passes; flux: BFL get_schedule; static: static shift on linspace(1, 0)")
        ->check(CLI::IsMember({"diffusers", "flux-pipeline", "flux", "static"}))
        ->capture_default_str();
    app.add_option("--steps", a->steps, "Number of sampling steps")->check(CLI::Range(1, 100000))->capture_default_str();
    app.add_option("--shift", a->shift, "Static shift (diffusers, static)")->capture_default_str();
    app.add_flag("--dynamic", a->dynamic, "diffusers: use_dynamic_shifting (needs --mu or --image-seq-len)");
    app.add_option("--mu", a->mu, "Time-shift mu for dynamic shifting");
    app.add_option("--image-seq-len", a->image_seq_len, "Image token count: FLUX's mu (0.5 at 256 .. 1.15 at 4096)");
    app.add_flag("--json", a->json, "Print {\"sigmas\": [...], \"timesteps\": [...], \"mu\": ...} as JSON");
    return [a, &app] {
      a->has_mu = app.count("--mu") > 0;
      std::optional<double> mu;
      if (a->has_mu) mu = a->mu;
      else if (a->image_seq_len > 0) mu = iomm::flux_mu(a->image_seq_len);
      iomm::Schedule s;
      if (a->kind == "diffusers") {
        iomm::FlowMatchEulerOptions o;
        o.shift = a->shift;
        o.use_dynamic_shifting = a->dynamic;
        s = iomm::flow_match_euler_schedule(o, a->steps, mu);
      } else if (a->kind == "flux-pipeline") {
        if (a->image_seq_len <= 0) iomm::fail("schedule --kind flux-pipeline needs --image-seq-len");
        s = iomm::flux_pipeline_schedule(a->steps, a->image_seq_len);
      } else if (a->kind == "flux") {
        if (a->image_seq_len <= 0) iomm::fail("schedule --kind flux needs --image-seq-len");
        s = iomm::flux_schedule(a->steps, a->image_seq_len);
      } else {
        s = iomm::static_shift_schedule(a->steps, a->shift);
      }
      if (a->json) {
        nlohmann::json j;
        j["sigmas"] = s.sigmas;
        j["timesteps"] = s.timesteps;
        j["mu"] = mu ? nlohmann::json(*mu) : nlohmann::json(nullptr);
        fmt::print("{}\n", j.dump());
      } else {
        for (size_t i = 0; i < s.sigmas.size(); ++i)
          fmt::print("{:4d}  sigma {:.8f}{}\n", i, s.sigmas[i],
                     i < s.timesteps.size() ? fmt::format("  timestep {:.6f}", s.timesteps[i]) : std::string());
      }
      return 0;
    };
  }}};

}  // namespace
