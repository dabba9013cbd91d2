// Errors that reach a user: one exception type, messages that name the file, the field and the fix.
#pragma once
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace iomm {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace iomm
