// Escaping for the self-contained HTML/SVG reports: every piece of text that reaches markup goes through here.
#pragma once
#include <string>
#include <string_view>

namespace iomm::report {

// & < > " ' -> entities; safe in element content and in quoted attribute values (HTML and XML/SVG alike).
std::string html_escape(std::string_view text);

// Percent-encodes a relative file path for an href/src attribute: every byte except RFC 3986 unreserved
// characters and '/' (so '#', '?', '%', spaces and non-ASCII names still address the file on disk).
std::string url_encode_path(std::string_view path);

}  // namespace iomm::report
