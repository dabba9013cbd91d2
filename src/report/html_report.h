// A self-contained HTML page builder for run reports: inline CSS and SVG, <img> links relative to the page, no
// scripts and nothing fetched from the network. Text arguments are escaped; only add_html/add_svg take markup.
#pragma once
#include <string>
#include <vector>

namespace iomm::report {

struct Figure {
  std::string src;      // image path relative to the report's directory (percent-encoded by the builder)
  std::string caption;  // plain text
  bool pixelated = true;  // nearest-neighbour display scaling: tiny samples stay crisp
  int width = 0;          // display width in CSS pixels; 0 = the image's own
};

class HtmlReport {
 public:
  explicit HtmlReport(std::string title);

  void add_heading(const std::string& text, int level = 2);  // level 1..4
  void add_paragraph(const std::string& text);
  void add_html(const std::string& raw);  // trusted markup, inserted as is
  // Cells that look like numbers are right-aligned; the caller formats them.
  void add_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);
  void add_image(const std::string& src_relative_path, const std::string& caption, bool pixelated = true);
  void add_image_row(const std::vector<Figure>& figures);  // side by side, wrapping on narrow screens
  void add_svg(const std::string& svg);                    // e.g. svg_line_plot(); plots flow side by side
  // Preformatted text; with a non-empty `summary`, folded into <details><summary>summary</summary>.
  void add_code(const std::string& text, const std::string& summary = "");

  std::string html() const;
  // Atomic (core/fs.h write_file_atomic); the directory must exist.
  void write(const std::string& path) const;

 private:
  std::string title_;
  std::string body_;
};

}  // namespace iomm::report
