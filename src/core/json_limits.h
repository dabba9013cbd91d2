// Limits on untrusted JSON, checked on the raw bytes before nlohmann builds a DOM: its parser is iterative, but
// copying, comparing and dumping a value recurse once per level, so a file nested 100k deep overflows the stack.
#pragma once
#include <string>
#include <string_view>

namespace iomm {

// Real configs, tokenizers and headers nest a handful of levels; 256 leaves room for any honest file.
inline constexpr int kMaxJsonDepth = 256;

// Fails naming `file`, the byte offset and the limit when an array or object opens deeper than `max_depth`.
// Only counts brackets outside strings; malformed JSON is left for the parser to report.
void check_json_nesting(std::string_view text, const std::string& file, int max_depth = kMaxJsonDepth);

}  // namespace iomm
