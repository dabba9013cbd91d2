// The report of one or more training run directories (core/run_dir.h layout): loss curves from metrics.jsonl,
// the newest sample grids from samples/*.png, the resolved config.toml. Used by `iomm report` and the demo.
#pragma once
#include <string>
#include <vector>

#include "report/html_report.h"
#include "report/plot.h"

namespace iomm::report {

// Every numeric field of RUN/metrics.jsonl as a series against "step" (the record's index when it has none),
// in order of first appearance. Records without a field are skipped for that field. "time" (the writer's Unix
// timestamp) becomes "elapsed_s", seconds since the first record, which shows throughput and stalls.
std::vector<PlotSeries> read_metric_series(const std::string& metrics_jsonl);

struct RunReportOptions {
  std::string title = "iomm training report";
  int samples = 4;          // newest sample PNGs shown per run
  double smoothing = 0.6;   // EMA weight for fields whose name contains "loss"
};

// Appends RUN's section (heading = the directory's name) to `report`; image links are made relative to
// `report_dir`, the directory the HTML file will be written to. Fails if RUN is not a directory.
void add_run_section(HtmlReport& report, const std::string& run, const std::string& report_dir,
                     const RunReportOptions& opt = {});
// A report over `runs` (with a loss comparison across them when there are several), written atomically to
// `out_html`; its directory is created.
void write_run_report(const std::vector<std::string>& runs, const std::string& out_html,
                      const RunReportOptions& opt = {});

}  // namespace iomm::report
