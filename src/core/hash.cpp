#include "core/hash.h"

#include <filesystem>
#include <fstream>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"

namespace iomm {

Hasher& Hasher::update(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = h_;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  h_ = h;
  return *this;
}

Hasher& Hasher::field(std::string_view s) {
  uint64_t n = s.size();
  update(&n, sizeof n);
  return update(s);
}

std::string Hasher::hex() const { return fmt::format("{:016x}", h_); }

std::string fingerprint_files(const std::string& dir, const std::initializer_list<const char*>& names) {
  Hasher h;
  std::vector<char> buf(1 << 20);
  for (const char* name : names) {
    auto path = std::filesystem::path(dir) / name;
    if (!std::filesystem::is_regular_file(path)) continue;
    h.field(name);
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("cannot read '{}' to fingerprint it", path.string());
    while (in) {
      in.read(buf.data(), std::streamsize(buf.size()));
      h.update(buf.data(), size_t(in.gcount()));
    }
  }
  return "fnv1a64:" + h.hex();
}

}  // namespace iomm
