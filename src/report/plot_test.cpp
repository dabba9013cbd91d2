#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <regex>
#include <set>

#include "core/error.h"
#include "report/plot.h"

using namespace iomm::report;

namespace {

int count(const std::string& s, const std::string& needle) {
  int n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + needle.size())) ++n;
  return n;
}

// Parse-level sanity: every element is closed in order (self-closing ones count as closed), the document is one
// <svg> root, and no stray '<' or '&' appears outside tags and entities.
void expect_well_formed(const std::string& svg) {
  std::vector<std::string> stack;
  int roots = 0;
  for (size_t i = 0; i < svg.size(); ++i) {
    if (svg[i] == '&') {
      const size_t semi = svg.find(';', i);
      ASSERT_NE(semi, std::string::npos);
      const std::string ent = svg.substr(i, semi - i + 1);
      ASSERT_TRUE(ent == "&amp;" || ent == "&lt;" || ent == "&gt;" || ent == "&quot;" || ent == "&#39;") << ent;
      continue;
    }
    if (svg[i] != '<') continue;
    const size_t close = svg.find('>', i);
    ASSERT_NE(close, std::string::npos);
    std::string tag = svg.substr(i + 1, close - i - 1);
    ASSERT_EQ(tag.find('<'), std::string::npos) << "'<' inside a tag: " << tag;
    if (tag[0] == '/') {
      ASSERT_FALSE(stack.empty()) << tag;
      ASSERT_EQ(stack.back(), tag.substr(1));
      stack.pop_back();
    } else if (tag.back() != '/') {
      const std::string name = tag.substr(0, tag.find_first_of(" \n"));
      if (stack.empty()) ++roots;
      stack.push_back(name);
    }
    i = close;
  }
  EXPECT_TRUE(stack.empty());
  EXPECT_EQ(roots, 1);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
}

std::vector<std::string> tick_labels(const std::string& svg, const std::string& cls) {
  std::vector<std::string> out;
  const std::regex re("<text class=\"" + cls + "\"[^>]*>([^<]*)</text>");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back((*it)[1]);
  return out;
}

// The number of "x,y" pairs in each polyline, in document order.
std::vector<size_t> polyline_sizes(const std::string& svg) {
  std::vector<size_t> out;
  const std::regex re("<polyline[^>]*points=\"([^\"]*)\"");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back(static_cast<size_t>(count((*it)[1], ",")));
  return out;
}

PlotSeries line(const std::string& name, int n, double a, double b) {
  PlotSeries s{name, {}, {}};
  for (int i = 0; i < n; ++i) {
    s.x.push_back(i);
    s.y.push_back(a + b * i);
  }
  return s;
}

}  // namespace

TEST(Plot, NiceAxisUsesOneTwoFiveSteps) {
  auto a = nice_axis(0, 1, 5);
  EXPECT_DOUBLE_EQ(a.step, 0.2);
  ASSERT_EQ(a.ticks.size(), 6u);
  EXPECT_DOUBLE_EQ(a.lo, 0);
  EXPECT_DOUBLE_EQ(a.hi, 1);
  a = nice_axis(3, 97, 5);  // widened to whole steps of 20
  EXPECT_DOUBLE_EQ(a.step, 20);
  EXPECT_DOUBLE_EQ(a.lo, 0);
  EXPECT_DOUBLE_EQ(a.hi, 100);
  a = nice_axis(-0.013, 0.011, 5);  // 0.0048 -> 0.005
  EXPECT_DOUBLE_EQ(a.step, 0.005);
  EXPECT_NEAR(a.lo, -0.015, 1e-12);
  EXPECT_NEAR(a.hi, 0.015, 1e-12);
  a = nice_axis(1, 5000, 4);  // 1249.75 -> 1000
  EXPECT_DOUBLE_EQ(a.step, 1000);
  a = nice_axis(7, 7, 5);  // degenerate: widened around the value
  EXPECT_LT(a.lo, 7);
  EXPECT_GT(a.hi, 7);
  EXPECT_THROW(nice_axis(0, std::numeric_limits<double>::infinity()), iomm::Error);
}

TEST(Plot, LogAxisTicksAtDecades) {
  auto a = log_axis(0.3, 0.8);  // one decade: 1-2-5
  EXPECT_EQ(a.ticks, (std::vector<double>{0.1, 0.2, 0.5, 1.0}));
  a = log_axis(2e-4, 30);
  EXPECT_DOUBLE_EQ(a.lo, 1e-4);
  EXPECT_DOUBLE_EQ(a.hi, 100);
  EXPECT_EQ(a.ticks.size(), 7u);
  a = log_axis(1e-12, 1);  // 12 decades: every other power
  EXPECT_EQ(a.ticks.size(), 7u);
  EXPECT_THROW(log_axis(0, 1), iomm::Error);
}

TEST(Plot, FormatTickIsShortAndExact) {
  EXPECT_EQ(format_tick(0.2 * 3, 0.2), "0.6");
  EXPECT_EQ(format_tick(1.0, 0.2), "1");
  EXPECT_EQ(format_tick(0.0, 0.2), "0");
  EXPECT_EQ(format_tick(-1e-17, 0.2), "0");
  EXPECT_EQ(format_tick(-0.015, 0.005), "-0.015");
  EXPECT_EQ(format_tick(2000, 1000), "2000");
  EXPECT_EQ(format_tick(1e-5, 0), "1e-05");
}

TEST(Plot, EmaMatchesTensorBoardDebiasing) {
  auto s = ema_smooth({1, 0}, 0.5);
  EXPECT_DOUBLE_EQ(s[0], 1.0);              // 0.5 / (1 - 0.5)
  EXPECT_DOUBLE_EQ(s[1], 0.25 / 0.75);      // (0.25 + 0) / (1 - 0.25)
  for (double v : ema_smooth({3, 3, 3}, 0.9)) EXPECT_NEAR(v, 3.0, 1e-12);  // debiased: no pull towards 0
  EXPECT_EQ(ema_smooth({1, 5, 2}, 0.0), (std::vector<double>{1, 5, 2}));
  EXPECT_THROW(ema_smooth({1}, 1.0), iomm::Error);
}

TEST(Plot, UnitRangeGivesTicksInStepsOfPointTwo) {
  PlotSeries s{"acc", {0, 1, 2, 3, 4, 5}, {0, 0.3, 0.5, 0.7, 0.9, 1.0}};
  const std::string svg = svg_line_plot({s}, {});
  expect_well_formed(svg);
  EXPECT_EQ(tick_labels(svg, "ytick"), (std::vector<std::string>{"0", "0.2", "0.4", "0.6", "0.8", "1"}));
  EXPECT_EQ(tick_labels(svg, "xtick").front(), "0");
  EXPECT_EQ(tick_labels(svg, "xtick").back(), "5");
  EXPECT_EQ(polyline_sizes(svg), std::vector<size_t>{6});
}

TEST(Plot, SmoothingDrawsRawAndEmaPerSeriesInDistinctColours) {
  PlotOptions opt;
  opt.title = "loss";
  opt.smoothing = 0.6;
  const std::string svg = svg_line_plot({line("a", 20, 1, -0.01), line("b", 20, 2, 0.01), line("c", 5, 0, 1)}, opt);
  expect_well_formed(svg);
  EXPECT_EQ(count(svg, "<polyline"), 6);
  EXPECT_EQ(count(svg, "stroke-opacity=\"0.25\""), 3);  // the raw, faint copies
  std::set<std::string> colours;
  const std::regex re("<polyline[^>]*stroke=\"(#[0-9a-f]{6})\"");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it)
    colours.insert((*it)[1]);
  EXPECT_EQ(colours.size(), 3u);
  EXPECT_EQ(svg_line_plot({line("a", 20, 1, -0.01), line("b", 20, 2, 0.01)}, {}).find("stroke-opacity"),
            std::string::npos);
}

TEST(Plot, NonFiniteAndEmptySeriesAreSkipped) {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  PlotSeries bad{"bad", {0, 1, 2, 3, 4}, {1, nan, 2, inf, 3}};
  PlotSeries empty{"empty", {}, {}};
  const std::string svg = svg_line_plot({bad, empty}, {});
  expect_well_formed(svg);
  EXPECT_EQ(polyline_sizes(svg), std::vector<size_t>{3});
  EXPECT_NE(svg.find("empty (no data)"), std::string::npos);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);

  const std::string none = svg_line_plot({empty}, {});
  expect_well_formed(none);
  EXPECT_EQ(count(none, "<polyline"), 0);
  EXPECT_NE(none.find(">no data<"), std::string::npos);
  EXPECT_EQ(svg_line_plot({}, {}).find("<polyline"), std::string::npos);
}

TEST(Plot, LogScaleSkipsNonPositiveValuesAndLabelsDecades) {
  PlotOptions opt;
  opt.log_y = true;
  PlotSeries s{"loss", {0, 1, 2, 3, 4}, {10, 1, 0, -1, 0.01}};
  const std::string svg = svg_line_plot({s}, opt);
  expect_well_formed(svg);
  EXPECT_EQ(polyline_sizes(svg), std::vector<size_t>{3});
  EXPECT_EQ(tick_labels(svg, "ytick"), (std::vector<std::string>{"0.01", "0.1", "1", "10"}));
}

TEST(Plot, TextIsEscaped) {
  PlotOptions opt;
  opt.title = "<script>alert('x')</script>";
  opt.x_label = "a & b";
  opt.y_label = "\"y\"";
  const std::string svg = svg_line_plot({line("<b>", 3, 0, 1)}, opt);
  expect_well_formed(svg);
  EXPECT_EQ(svg.find("<script"), std::string::npos);
  EXPECT_EQ(svg.find("<b>"), std::string::npos);
  EXPECT_NE(svg.find("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(svg.find("a &amp; b"), std::string::npos);
  EXPECT_NE(svg.find("&quot;y&quot;"), std::string::npos);
}

TEST(Plot, LongSeriesAreDecimatedToThePixelEnvelope) {
  PlotSeries s{"noise", {}, {}};
  for (int i = 0; i < 100000; ++i) {
    s.x.push_back(i);
    s.y.push_back(i % 2 ? 1.0 : -1.0);
  }
  const std::string svg = svg_line_plot({s}, {});
  const auto sizes = polyline_sizes(svg);
  ASSERT_EQ(sizes.size(), 1u);
  EXPECT_LE(sizes[0], 2u * 640);
  EXPECT_GE(sizes[0], 2u * 500);  // both extremes kept in every column
}

TEST(Plot, RejectsMismatchedSeriesAndBadOptions) {
  EXPECT_THROW(svg_line_plot({PlotSeries{"x", {0, 1}, {1}}}, {}), iomm::Error);
  PlotOptions opt;
  opt.smoothing = 1.0;
  EXPECT_THROW(svg_line_plot({}, opt), iomm::Error);
  opt = {};
  opt.width = 10;
  EXPECT_THROW(svg_line_plot({}, opt), iomm::Error);
}

TEST(Plot, ALonePointIsMarked) {
  const std::string one = svg_line_plot({PlotSeries{"grad_norm", {100}, {0.5}}}, {});
  expect_well_formed(one);
  EXPECT_EQ(count(one, "<circle"), 1);
  EXPECT_EQ(count(svg_line_plot({line("a", 2, 0, 1)}, {}), "<circle"), 0);
}
