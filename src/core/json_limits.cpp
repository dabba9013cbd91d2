#include "core/json_limits.h"

#include "core/error.h"

namespace iomm {

void check_json_nesting(std::string_view text, const std::string& file, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;  // the escaped character cannot end the string
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth)
        fail("{}: JSON nested deeper than {} levels (at byte {}); real files nest a few levels, so this one is "
             "damaged or not what it claims to be: re-download or re-export it",
             file, max_depth, i);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
}

}  // namespace iomm
