#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "core/error.h"
#include "core/fs.h"
#include "report/escape.h"
#include "report/html_report.h"

using namespace iomm::report;

namespace {
const std::string kHostile = "<b>x</b> & \"q\" 'a'";
const std::string kEscaped = "&lt;b&gt;x&lt;/b&gt; &amp; &quot;q&quot; &#39;a&#39;";

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}
}  // namespace

TEST(HtmlReport, EscapeHelpers) {
  EXPECT_EQ(html_escape(kHostile), kEscaped);
  EXPECT_EQ(html_escape("plain text 1.5"), "plain text 1.5");
  EXPECT_EQ(url_encode_path("run 1/samples/a#b?.png"), "run%201/samples/a%23b%3F.png");
  EXPECT_EQ(url_encode_path("r<&>\"%/x.png"), "r%3C%26%3E%22%25/x.png");
  EXPECT_EQ(url_encode_path("\xc3\xa9.png"), "%C3%A9.png");  // UTF-8 bytes
}

TEST(HtmlReport, EveryTextArgumentIsEscaped) {
  HtmlReport r(kHostile);
  r.add_heading(kHostile, 3);
  r.add_paragraph(kHostile);
  r.add_table({kHostile}, {{kHostile, "0.25"}});
  r.add_image("s/" + kHostile + ".png", kHostile);
  r.add_image_row({{"a.png", kHostile, false, 96}});
  r.add_code(kHostile, kHostile);
  const std::string html = r.html();
  EXPECT_EQ(html.find("<b>"), std::string::npos);
  EXPECT_EQ(html.find("'a'"), std::string::npos);
  // title + h1 + h3 + p + th + td + (alt + img title + caption) × 2 + summary + code
  EXPECT_EQ(count(html, kEscaped), 14u);
  EXPECT_NE(html.find("<title>" + kEscaped + "</title>"), std::string::npos);
  EXPECT_NE(html.find("<h3>" + kEscaped + "</h3>"), std::string::npos);
  EXPECT_NE(html.find("src=\"s/%3Cb%3Ex%3C/b%3E%20%26%20%22q%22%20%27a%27.png\""), std::string::npos);
  EXPECT_NE(html.find("<details><summary>" + kEscaped + "</summary>"), std::string::npos);
}

TEST(HtmlReport, RawHtmlAndSvgAreInsertedVerbatim) {
  HtmlReport r("t");
  r.add_html("<hr class=\"mine\">");
  r.add_svg("<svg xmlns=\"http://www.w3.org/2000/svg\"><rect/></svg>");
  const std::string html = r.html();
  EXPECT_NE(html.find("<hr class=\"mine\">"), std::string::npos);
  EXPECT_NE(html.find("<div class=\"svg\">\n<svg xmlns=\"http://www.w3.org/2000/svg\"><rect/></svg></div>"),
            std::string::npos);
}

TEST(HtmlReport, DocumentIsSelfContained) {
  HtmlReport r("run");
  r.add_image("grid.png", "step 100");
  r.add_image("photo.png", "", /*pixelated=*/false);
  const std::string html = r.html();
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("<meta charset=\"utf-8\">"), std::string::npos);
  EXPECT_NE(html.find("image-rendering: pixelated"), std::string::npos);
  EXPECT_NE(html.find("<img src=\"grid.png\" alt=\"step 100\" class=\"pixelated\" title=\"step 100\">"),
            std::string::npos);
  EXPECT_NE(html.find("<img src=\"photo.png\" alt=\"\">"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("http://"), std::string::npos);  // nothing fetched
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_TRUE(html.size() > 10 && html.substr(html.size() - 8) == "</html>\n");
}

TEST(HtmlReport, TablesRightAlignNumbersOnly) {
  HtmlReport r("t");
  r.add_table({"metric", "value"}, {{"loss", "0.125"}, {"lr", "1e-4"}, {"note", "12 ms"}});
  const std::string html = r.html();
  EXPECT_NE(html.find("<thead><tr><th>metric</th><th>value</th></tr></thead>"), std::string::npos);
  EXPECT_NE(html.find("<tr><td>loss</td><td class=\"num\">0.125</td></tr>"), std::string::npos);
  EXPECT_NE(html.find("<td class=\"num\">1e-4</td>"), std::string::npos);
  EXPECT_NE(html.find("<td>12 ms</td>"), std::string::npos);
}

TEST(HtmlReport, ImageRowKeepsFiguresTogetherInOrder) {
  HtmlReport r("t");
  r.add_image_row({{"a.png", "first"}, {"b.png", "second"}});
  const std::string html = r.html();
  const size_t row = html.find("<div class=\"row\">"), a = html.find("a.png"), b = html.find("b.png");
  ASSERT_NE(row, std::string::npos);
  EXPECT_LT(row, a);
  EXPECT_LT(a, b);
  EXPECT_LT(b, html.find("</div>", row));
  EXPECT_NE(html.find("<figcaption>second</figcaption>"), std::string::npos);
}

TEST(HtmlReport, ALabelledSampleShowsItsPromptUnderneathAndOnHover) {
  HtmlReport r("t");
  r.add_image_row({{"s.png", "a photo of a <red> circle", true, 96}});
  const std::string html = r.html();
  EXPECT_NE(html.find("<figure style=\"width:96px\">"), std::string::npos) << html;
  EXPECT_NE(html.find("title=\"a photo of a &lt;red&gt; circle\""), std::string::npos) << html;
  EXPECT_NE(html.find("<figcaption>a photo of a &lt;red&gt; circle</figcaption>"), std::string::npos) << html;
}

TEST(HtmlReport, WriteIsAtomicAndRejectsBadHeadings) {
  HtmlReport r("t");
  EXPECT_THROW(r.add_heading("x", 0), iomm::Error);
  EXPECT_THROW(r.add_heading("x", 5), iomm::Error);
  const auto dir = std::filesystem::temp_directory_path() / ("iomm_html_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "report.html").string();
  r.add_paragraph("hello");
  r.write(path);
  EXPECT_EQ(iomm::read_file(path), r.html());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_THROW(r.write((dir / "missing" / "report.html").string()), iomm::Error);
  std::filesystem::remove_all(dir);
}
