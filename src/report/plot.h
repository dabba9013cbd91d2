// Line plots as self-contained SVG (no scripts, no fonts to fetch), for the HTML reports: loss curves and the like.
#pragma once
#include <string>
#include <vector>

namespace iomm::report {

struct PlotSeries {
  std::string name;
  std::vector<double> x, y;  // same length; points with a non-finite x or y are skipped
};

struct PlotOptions {
  std::string title, x_label, y_label;
  int width = 640, height = 360;
  bool log_y = false;      // log10 y axis; non-positive values are skipped
  double smoothing = 0.0;  // TensorBoard's EMA weight in [0, 1); > 0 draws the raw series faint, the EMA solid
  bool legend = true;
};

// One <polyline> per series with data (two when smoothing > 0); series without finite points appear only in the
// legend, marked "(no data)". Text is escaped. Long series are decimated to min/max per pixel column.
std::string svg_line_plot(const std::vector<PlotSeries>& series, const PlotOptions& opt);

// ---- building blocks, exposed for tests and for other plot kinds ----

// A linear axis on "nice" round numbers: step 1, 2 or 5 x 10^k giving about `target` intervals; the domain
// [lo, hi] is widened to whole steps, so the first and last ticks are its ends. Degenerate ranges are widened.
struct Axis {
  double lo = 0, hi = 1, step = 0.2;
  std::vector<double> ticks;
};
Axis nice_axis(double lo, double hi, int target = 5);
// A log10 axis over positive [lo, hi]: domain widened to whole decades, ticks at powers of ten (also 2x and 5x
// when it spans a single decade, every k-th power when it spans many). `step` is unused (0).
Axis log_axis(double lo, double hi);
// Shortest decimal that tells ticks `step` apart: format_tick(0.6000000001, 0.2) == "0.6", (1.0, 0.2) == "1".
std::string format_tick(double v, double step);
// TensorBoard's debiased EMA: s_i = w s_{i-1} + (1 - w) y_i, divided by 1 - w^i, so the start is not pulled to 0.
std::vector<double> ema_smooth(const std::vector<double>& y, double weight);

}  // namespace iomm::report
