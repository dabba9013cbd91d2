#include "report/plot.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "core/error.h"
#include "report/escape.h"

namespace iomm::report {

namespace {

// Tableau 10, the matplotlib default cycle: distinct hues that read well on white.
constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr int kPaletteSize = 10;

double nice_step(double raw) {
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  const double m = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
  return m * mag;
}

// Widens an empty or single-valued range so that it still has an extent to draw.
void widen_degenerate(double& lo, double& hi) {
  if (hi > lo) return;
  const double pad = lo == 0 ? 1.0 : std::abs(lo) * 0.1;
  lo -= pad;
  hi += pad;
}

std::string num(double v) { return fmt::format("{:.1f}", v); }

struct Point {
  double x, y;
};

// The finite points of a series (and positive y on a log axis), in the given order.
std::vector<Point> usable_points(const PlotSeries& s, bool log_y) {
  if (s.x.size() != s.y.size())
    fail("svg_line_plot: series '{}' has {} x values but {} y values; pass one x per y", s.name, s.x.size(),
         s.y.size());
  std::vector<Point> pts;
  for (size_t i = 0; i < s.x.size(); ++i) {
    const double x = s.x[i], y = s.y[i];
    if (!std::isfinite(x) || !std::isfinite(y) || (log_y && y <= 0)) continue;
    pts.push_back({x, y});
  }
  return pts;
}

// Keeps the lowest and highest point of each pixel column (in their order) once a series has far more points
// than pixels: the drawn envelope is the same, the file stays small.
std::vector<Point> decimate(const std::vector<Point>& px, double plot_width) {
  if (px.size() <= static_cast<size_t>(2 * plot_width) + 2) return px;
  std::vector<Point> out;
  size_t begin = 0;
  while (begin < px.size()) {
    const auto column = std::floor(px[begin].x);
    size_t end = begin, lo = begin, hi = begin;
    for (; end < px.size() && std::floor(px[end].x) == column; ++end) {
      if (px[end].y < px[lo].y) lo = end;
      if (px[end].y > px[hi].y) hi = end;
    }
    out.push_back(px[std::min(lo, hi)]);
    if (lo != hi) out.push_back(px[std::max(lo, hi)]);
    begin = end;
  }
  return out;
}

std::string polyline(const std::vector<Point>& px, const std::string& style) {
  std::string pts;
  for (const auto& p : px) {
    if (!pts.empty()) pts += ' ';
    pts += num(p.x) + ',' + num(p.y);
  }
  return fmt::format("<polyline fill=\"none\" {} points=\"{}\"/>\n", style, pts);
}

}  // namespace

Axis nice_axis(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) fail("nice_axis: non-finite range [{}, {}]", lo, hi);
  widen_degenerate(lo, hi);
  Axis a;
  a.step = nice_step((hi - lo) / std::max(1, target));
  // Integer tick indices, so that 0.2 * 3 prints as 0.6 and the ends are exact multiples of the step.
  const auto i0 = static_cast<int64_t>(std::floor(lo / a.step + 1e-9));
  const auto i1 = static_cast<int64_t>(std::ceil(hi / a.step - 1e-9));
  a.lo = i0 * a.step;
  a.hi = i1 * a.step;
  for (int64_t i = i0; i <= i1; ++i) a.ticks.push_back(i * a.step);
  return a;
}

Axis log_axis(double lo, double hi) {
  if (!(lo > 0) || !(hi > 0) || !std::isfinite(lo) || !std::isfinite(hi))
    fail("log_axis: the range [{}, {}] must be positive and finite", lo, hi);
  auto e0 = static_cast<int>(std::floor(std::log10(lo) + 1e-9));
  auto e1 = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
  if (e1 <= e0) e1 = e0 + 1;
  Axis a;
  a.lo = std::pow(10.0, e0);
  a.hi = std::pow(10.0, e1);
  a.step = 0;
  const int decades = e1 - e0;
  const int every = std::max(1, (decades + 5) / 6);
  for (int e = e0; e <= e1; e += every) {
    const double p = std::pow(10.0, e);
    a.ticks.push_back(p);
    if (decades == 1 && e < e1) {
      a.ticks.push_back(2 * p);
      a.ticks.push_back(5 * p);
    }
  }
  return a;
}

std::string format_tick(double v, double step) {
  if (step > 0 && std::abs(v) < step * 1e-6) v = 0;  // no "-0" from 0.2 * -0 rounding
  if (step <= 0 || step >= 1e5 || step < 1e-4) return fmt::format("{:g}", v);
  const int decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
  std::string s = fmt::format("{:.{}f}", v, decimals);
  if (s.find('.') != std::string::npos) {
    s.erase(s.find_last_not_of('0') + 1);
    if (s.back() == '.') s.pop_back();
  }
  return s == "-0" ? "0" : s;
}

std::vector<double> ema_smooth(const std::vector<double>& y, double weight) {
  if (!(weight >= 0 && weight < 1)) fail("ema_smooth: weight {} must be in [0, 1)", weight);
  std::vector<double> out;
  out.reserve(y.size());
  double last = 0, debias = 1;
  for (double v : y) {
    last = last * weight + (1 - weight) * v;
    debias *= weight;
    out.push_back(last / (1 - debias));
  }
  return out;
}

std::string svg_line_plot(const std::vector<PlotSeries>& series, const PlotOptions& opt) {
  if (opt.width < 120 || opt.height < 100)
    fail("svg_line_plot: {}x{} is too small to draw axes; use at least 120x100", opt.width, opt.height);
  if (!(opt.smoothing >= 0 && opt.smoothing < 1))
    fail("svg_line_plot: smoothing {} must be in [0, 1) (0 = off, 0.6 = TensorBoard's default)", opt.smoothing);

  std::vector<std::vector<Point>> data;
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymin = xmin, ymax = -xmin;
  for (const auto& s : series) {
    data.push_back(usable_points(s, opt.log_y));
    for (const auto& p : data.back()) {
      xmin = std::min(xmin, p.x), xmax = std::max(xmax, p.x);
      ymin = std::min(ymin, p.y), ymax = std::max(ymax, p.y);
    }
  }
  const bool any = std::isfinite(xmin);
  if (!any) xmin = 0, xmax = 1, ymin = opt.log_y ? 0.1 : 0, ymax = 1;

  const double left = 64, right = 16, top = opt.title.empty() ? 14 : 30, bottom = opt.x_label.empty() ? 28 : 44;
  const double pw = opt.width - left - right, ph = opt.height - top - bottom;
  const Axis xa = nice_axis(xmin, xmax, std::clamp(static_cast<int>(pw / 90), 2, 10));
  const Axis ya = opt.log_y ? log_axis(ymin, ymax) : nice_axis(ymin, ymax, std::clamp(static_cast<int>(ph / 55), 3, 10));
  auto ty = [&](double v) { return opt.log_y ? std::log10(v) : v; };
  auto sx = [&](double v) { return left + (v - xa.lo) / (xa.hi - xa.lo) * pw; };
  auto sy = [&](double v) { return top + ph - (ty(v) - ty(ya.lo)) / (ty(ya.hi) - ty(ya.lo)) * ph; };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"system-ui, sans-serif\" font-size=\"11\" class=\"plot\">\n"
      "<rect x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"#fff\"/>\n",
      opt.width, opt.height);
  if (!opt.title.empty())
    svg += fmt::format("<text x=\"{}\" y=\"19\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"600\">{}</text>\n",
                       num(left + pw / 2), html_escape(opt.title));

  // Grid lines and tick labels.
  svg += "<g stroke=\"#e5e5e5\" stroke-width=\"1\">\n";
  for (double t : xa.ticks) svg += fmt::format("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\"/>\n", num(sx(t)), num(top), num(top + ph));
  for (double t : ya.ticks) svg += fmt::format("<line x1=\"{1}\" y1=\"{0}\" x2=\"{2}\" y2=\"{0}\"/>\n", num(sy(t)), num(left), num(left + pw));
  svg += "</g>\n";
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\n", num(left),
                     num(top), num(pw), num(ph));
  svg += "<g fill=\"#444\">\n";
  for (double t : xa.ticks)
    svg += fmt::format("<text class=\"xtick\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", num(sx(t)),
                       num(top + ph + 14), format_tick(t, xa.step));
  for (double t : ya.ticks)
    svg += fmt::format("<text class=\"ytick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n", num(left - 5),
                       num(sy(t) + 4), format_tick(t, ya.step));
  svg += "</g>\n";
  if (!opt.x_label.empty())
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", num(left + pw / 2),
                       num(opt.height - 8.0), html_escape(opt.x_label));
  if (!opt.y_label.empty())
    svg += fmt::format("<text x=\"13\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 13 {0})\">{1}</text>\n",
                       num(top + ph / 2), html_escape(opt.y_label));
  if (!any)
    svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#999\">no data</text>\n",
                       num(left + pw / 2), num(top + ph / 2));

  // The series: raw (faint when smoothed) then the EMA on top.
  for (size_t i = 0; i < data.size(); ++i) {
    if (data[i].empty()) continue;
    const std::string colour = kPalette[i % kPaletteSize];
    // Beyond ten series the hues repeat; a dash pattern keeps them apart.
    const std::string dash = i >= kPaletteSize ? " stroke-dasharray=\"6 3\"" : "";
    std::vector<Point> px;
    for (const auto& p : data[i]) px.push_back({sx(p.x), sy(p.y)});
    if (opt.smoothing > 0) {
      svg += polyline(decimate(px, pw), fmt::format("stroke=\"{}\" stroke-opacity=\"0.25\" stroke-width=\"1\"", colour));
      std::vector<double> ys;
      for (const auto& p : data[i]) ys.push_back(p.y);
      const auto smooth = ema_smooth(ys, opt.smoothing);
      for (size_t k = 0; k < px.size(); ++k) px[k].y = sy(smooth[k]);
    }
    svg += polyline(decimate(px, pw), fmt::format("stroke=\"{}\" stroke-width=\"1.8\"{}", colour, dash));
    // A lone point draws no line; mark it so that a metric logged once is still visible.
    if (px.size() == 1)
      svg += fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{}\"/>\n", num(px[0].x), num(px[0].y), colour);
  }

  if (opt.legend && !series.empty()) {
    size_t longest = 0;
    for (size_t i = 0; i < series.size(); ++i)
      longest = std::max(longest, series[i].name.size() + (data[i].empty() ? 10 : 0));
    const double bw = 34 + 6.2 * static_cast<double>(longest), bh = 8 + 15.0 * series.size();
    const double bx = left + pw - bw - 6, by = top + 6;
    svg += fmt::format("<g class=\"legend\">\n<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#fff\" "
                       "fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n",
                       num(bx), num(by), num(bw), num(bh));
    for (size_t i = 0; i < series.size(); ++i) {
      const double ly = by + 12 + 15.0 * i;
      svg += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2.5\"{}/>\n",
                         num(bx + 6), num(ly), num(bx + 24), num(ly), kPalette[i % kPaletteSize],
                         i >= kPaletteSize ? " stroke-dasharray=\"6 3\"" : "");
      svg += fmt::format("<text x=\"{}\" y=\"{}\">{}{}</text>\n", num(bx + 29), num(ly + 4), html_escape(series[i].name),
                         data[i].empty() ? " (no data)" : "");
    }
    svg += "</g>\n";
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace iomm::report
