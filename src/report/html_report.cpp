#include "report/html_report.h"

#include <cstdlib>

#include <fmt/format.h>

#include "core/error.h"
#include "core/fs.h"
#include "report/escape.h"

namespace iomm::report {

namespace {

constexpr const char* kCss = R"(
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; background: #fafafa;
       margin: 0; }
main { max-width: 1400px; margin: 0 auto; padding: 1.5rem 2rem 3rem; }
h1 { font-size: 1.7rem; margin: 0 0 1rem; }
h2 { font-size: 1.35rem; margin: 2.2rem 0 .6rem; padding-bottom: .2rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.1rem; margin: 1.4rem 0 .5rem; }
h4 { font-size: 1rem; margin: 1rem 0 .4rem; }
p { margin: .4rem 0 .8rem; max-width: 75ch; }
table { border-collapse: collapse; margin: .5rem 0 1rem; background: #fff; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; }
th { background: #f0f0f0; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #f8f8f8; }
figure { display: inline-block; vertical-align: top; margin: 0 1rem 1rem 0; }
figure img { display: block; max-width: 100%; border: 1px solid #ddd; background: #fff; }
/* crisp-edges first: browsers that know pixelated (the nearest-neighbour one) take the later rule */
figure img.pixelated { image-rendering: crisp-edges; image-rendering: pixelated; min-width: 96px; }
figcaption { font-size: 13px; color: #555; margin-top: .25rem; overflow-wrap: anywhere; }
.row { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 1rem; margin-bottom: 1rem; }
.row figure { margin: 0; }
.svg { display: inline-block; vertical-align: top; margin: 0 1rem 1rem 0; border: 1px solid #ddd; }
.svg svg { display: block; max-width: 100%; height: auto; }
pre { background: #fff; border: 1px solid #ddd; padding: .7rem 1rem; overflow-x: auto; font-size: 13px;
      line-height: 1.4; }
details { margin: .5rem 0 1rem; }
summary { cursor: pointer; color: #444; }
)";

// Whether a cell reads as a number ("0.25", "-3e-4", "12 ms" does not), for right alignment.
bool looks_numeric(const std::string& s) {
  if (s.empty()) return false;
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

std::string figure_html(const Figure& f) {
  std::string attrs = fmt::format("src=\"{}\" alt=\"{}\"", html_escape(url_encode_path(f.src)), html_escape(f.caption));
  if (f.pixelated) attrs += " class=\"pixelated\"";
  if (f.width > 0) attrs += fmt::format(" width=\"{}\"", f.width);
  if (!f.caption.empty()) attrs += " title=\"" + html_escape(f.caption) + "\"";  // the caption on hover, too
  // A fixed width keeps a long caption (a prompt) under its image instead of widening the figure.
  std::string out = f.width > 0 ? fmt::format("<figure style=\"width:{}px\"><img ", f.width) + attrs + ">"
                                : "<figure><img " + attrs + ">";
  if (!f.caption.empty()) out += "<figcaption>" + html_escape(f.caption) + "</figcaption>";
  return out + "</figure>\n";
}

}  // namespace

HtmlReport::HtmlReport(std::string title) : title_(std::move(title)) {
  body_ += "<h1>" + html_escape(title_) + "</h1>\n";
}

void HtmlReport::add_heading(const std::string& text, int level) {
  if (level < 1 || level > 4) fail("HtmlReport::add_heading: level {} must be 1..4", level);
  body_ += fmt::format("<h{0}>{1}</h{0}>\n", level, html_escape(text));
}

void HtmlReport::add_paragraph(const std::string& text) { body_ += "<p>" + html_escape(text) + "</p>\n"; }

void HtmlReport::add_html(const std::string& raw) { body_ += raw + "\n"; }

void HtmlReport::add_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::string t = "<table>\n";
  if (!header.empty()) {
    t += "<thead><tr>";
    for (const auto& h : header) t += "<th>" + html_escape(h) + "</th>";
    t += "</tr></thead>\n";
  }
  t += "<tbody>\n";
  for (const auto& row : rows) {
    t += "<tr>";
    for (const auto& c : row) t += (looks_numeric(c) ? "<td class=\"num\">" : "<td>") + html_escape(c) + "</td>";
    t += "</tr>\n";
  }
  body_ += t + "</tbody>\n</table>\n";
}

void HtmlReport::add_image(const std::string& src_relative_path, const std::string& caption, bool pixelated) {
  body_ += figure_html({src_relative_path, caption, pixelated, 0});
}

void HtmlReport::add_image_row(const std::vector<Figure>& figures) {
  std::string row = "<div class=\"row\">\n";
  for (const auto& f : figures) row += figure_html(f);
  body_ += row + "</div>\n";
}

void HtmlReport::add_svg(const std::string& svg) { body_ += "<div class=\"svg\">\n" + svg + "</div>\n"; }

void HtmlReport::add_code(const std::string& text, const std::string& summary) {
  const std::string pre = "<pre><code>" + html_escape(text) + "</code></pre>\n";
  body_ += summary.empty() ? pre : "<details><summary>" + html_escape(summary) + "</summary>\n" + pre + "</details>\n";
}

std::string HtmlReport::html() const {
  return "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
         "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>" +
         html_escape(title_) + "</title>\n<style>" + kCss + "</style>\n</head>\n<body>\n<main>\n" + body_ +
         "</main>\n</body>\n</html>\n";
}

void HtmlReport::write(const std::string& path) const { write_file_atomic(path, html()); }

}  // namespace iomm::report
