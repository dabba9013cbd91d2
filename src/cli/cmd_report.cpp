// `iomm report RUN [RUN ...] --out report.html`: one self-contained HTML page (inline SVG plots, relative <img>
// links) over training run directories: loss curves, metric summaries, the newest sample grids, the config.
#include <memory>

#include <spdlog/spdlog.h>

#include "cli/command.h"
#include "report/run_report.h"

namespace {

struct ReportArgs {
  std::vector<std::string> runs;
  std::string out = "report.html";
  iomm::report::RunReportOptions opt;
};

iomm::cli::Register reg{{"report", "HTML report (loss curves, sample grids, config) of training run directories",
  [](CLI::App& app) {
    auto a = std::make_shared<ReportArgs>();
    app.add_option("runs", a->runs, "run directories (each with metrics.jsonl, samples/*.png, config.toml)")
        ->required();
    app.add_option("--out", a->out, "HTML file to write; images are linked relative to it")->capture_default_str();
    app.add_option("--title", a->opt.title, "page title")->capture_default_str();
    app.add_option("--samples", a->opt.samples, "newest sample PNGs shown per run")
        ->check(CLI::Range(0, 1000))->capture_default_str();
    app.add_option("--smoothing", a->opt.smoothing, "EMA weight for loss curves, 0 = off (TensorBoard's slider)")
        ->check(CLI::Range(0.0, 0.999))->capture_default_str();
    return [a]() -> int {
      iomm::report::write_run_report(a->runs, a->out, a->opt);
      spdlog::info("report over {} run(s) -> {}", a->runs.size(), a->out);
      return 0;
    };
  }}};

}  // namespace
