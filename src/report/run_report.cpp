#include "report/run_report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "core/metrics.h"

namespace fs = std::filesystem;

namespace iomm::report {

namespace {

std::string run_name(const std::string& run) {
  fs::path p = fs::absolute(run).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // "runs/a/" and "." name the directory itself
  return p.filename().string();
}

bool is_loss(const std::string& field) { return field.find("loss") != std::string::npos; }

// Log scale when every value is positive and they span two decades or more (a loss falling from 1 to 0.01);
// otherwise the linear axis reads better.
bool wants_log(const PlotSeries& s) {
  double lo = INFINITY, hi = -INFINITY;
  for (double v : s.y) {
    if (!std::isfinite(v)) continue;
    if (v <= 0) return false;
    lo = std::min(lo, v), hi = std::max(hi, v);
  }
  return std::isfinite(lo) && hi / lo >= 100;
}

std::string fmt_value(double v) { return fmt::format("{:.6g}", v); }

std::vector<std::string> summary_row(const PlotSeries& s) {
  double lo = INFINITY, hi = -INFINITY;
  size_t finite = 0;
  for (double v : s.y)
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v), ++finite;
  if (finite == 0) return {s.name, std::to_string(s.y.size()), "-", "-", "-", "-"};
  auto first = std::find_if(s.y.begin(), s.y.end(), [](double v) { return std::isfinite(v); });
  auto last = std::find_if(s.y.rbegin(), s.y.rend(), [](double v) { return std::isfinite(v); });
  return {s.name, std::to_string(s.y.size()), fmt_value(*first), fmt_value(*last), fmt_value(lo), fmt_value(hi)};
}

// The newest `n` PNGs of RUN/samples, by name (sample writers name them by step, zero-padded).
std::vector<fs::path> newest_samples(const fs::path& run, int n) {
  std::vector<fs::path> pngs;
  const fs::path dir = run / "samples";
  if (!fs::is_directory(dir)) return pngs;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().extension() == ".png") pngs.push_back(e.path());
  std::sort(pngs.begin(), pngs.end());
  if (n >= 0 && pngs.size() > static_cast<size_t>(n)) pngs.erase(pngs.begin(), pngs.end() - n);
  return pngs;
}

std::string plot_metric(const PlotSeries& s, const RunReportOptions& opt) {
  PlotOptions po;
  po.title = s.name;
  po.x_label = "step";
  po.y_label = s.name;
  po.width = 560;
  po.height = 320;
  po.smoothing = is_loss(s.name) ? opt.smoothing : 0.0;
  po.log_y = wants_log(s);
  po.legend = false;  // one series per plot; the title names it
  return svg_line_plot({s}, po);
}

}  // namespace

std::vector<PlotSeries> read_metric_series(const std::string& metrics_jsonl) {
  const auto records = read_jsonl(metrics_jsonl);
  std::vector<PlotSeries> out;
  std::map<std::string, size_t> index;
  double t0 = NAN;
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    if (!r.is_object())
      fail("{}: record {} is not a JSON object; metrics.jsonl holds one object per line", metrics_jsonl, i + 1);
    const double step = r.contains("step") && r["step"].is_number() ? r["step"].get<double>() : static_cast<double>(i);
    for (const auto& [key, value] : r.items()) {
      if (key == "step" || !value.is_number()) continue;
      double v = value.get<double>();
      std::string name = key;
      if (key == "time") {
        if (std::isnan(t0)) t0 = v;
        v -= t0;
        name = "elapsed_s";
      }
      auto [it, added] = index.emplace(name, out.size());
      if (added) out.push_back({name, {}, {}});
      out[it->second].x.push_back(step);
      out[it->second].y.push_back(v);
    }
  }
  return out;
}

void add_run_section(HtmlReport& report, const std::string& run, const std::string& report_dir,
                     const RunReportOptions& opt) {
  if (!fs::is_directory(run))
    fail("report: run directory '{}' does not exist; pass a directory written by a training run (it holds "
         "metrics.jsonl, samples/, config.toml)",
         run);
  const fs::path dir(run);
  report.add_heading(run_name(run), 2);
  report.add_paragraph(run);

  const fs::path metrics = dir / "metrics.jsonl";
  if (fs::exists(metrics)) {
    const auto series = read_metric_series(metrics.string());
    if (series.empty()) report.add_paragraph("metrics.jsonl holds no numeric fields.");
    std::vector<std::vector<std::string>> rows;
    for (const auto& s : series) rows.push_back(summary_row(s));
    if (!rows.empty()) report.add_table({"metric", "points", "first", "last", "min", "max"}, rows);
    // Losses first: they are what one opens a training report for.
    std::vector<const PlotSeries*> order;
    for (const auto& s : series) if (is_loss(s.name)) order.push_back(&s);
    for (const auto& s : series) if (!is_loss(s.name)) order.push_back(&s);
    for (const auto* s : order) report.add_svg(plot_metric(*s, opt));
  } else {
    report.add_paragraph("No metrics.jsonl in this run.");
  }

  const auto samples = newest_samples(dir, opt.samples);
  if (!samples.empty()) {
    report.add_heading("Samples", 3);
    std::vector<Figure> figs;
    const fs::path base = fs::absolute(report_dir.empty() ? "." : report_dir).lexically_normal();
    for (const auto& p : samples)
      figs.push_back({fs::absolute(p).lexically_normal().lexically_relative(base).generic_string(),
                      p.filename().string(), true, 0});
    report.add_image_row(figs);
  }

  const fs::path config = dir / "config.toml";
  if (fs::exists(config)) report.add_code(read_file(config.string()), "config.toml");
}

void write_run_report(const std::vector<std::string>& runs, const std::string& out_html, const RunReportOptions& opt) {
  if (runs.empty()) fail("report: no run directories given");
  const fs::path out = fs::absolute(out_html);
  fs::create_directories(out.parent_path());
  HtmlReport report(opt.title);

  if (runs.size() > 1) {
    std::vector<PlotSeries> losses;
    for (const auto& run : runs) {
      const fs::path m = fs::path(run) / "metrics.jsonl";
      if (!fs::exists(m)) continue;
      for (auto& s : read_metric_series(m.string()))
        if (s.name == "loss") losses.push_back({run_name(run), std::move(s.x), std::move(s.y)});
    }
    if (!losses.empty()) {
      report.add_heading("Loss, all runs", 2);
      PlotOptions po;
      po.title = "loss";
      po.x_label = "step";
      po.y_label = "loss";
      po.width = 760;
      po.height = 380;
      po.smoothing = opt.smoothing;
      report.add_svg(svg_line_plot(losses, po));
    }
  }
  for (const auto& run : runs) add_run_section(report, run, out.parent_path().string(), opt);
  report.write(out.string());
}

}  // namespace iomm::report
