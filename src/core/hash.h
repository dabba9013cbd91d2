// A streaming 64-bit FNV-1a hash, for fingerprints of weights and files (is this the same model / tokenizer as
// before?). Not cryptographic: it detects changed bytes, it does not resist deliberate collisions.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace iomm {

class Hasher {
 public:
  Hasher& update(const void* data, size_t n);
  Hasher& update(std::string_view s) { return update(s.data(), s.size()); }
  // A field: its length first, so ("ab","c") and ("a","bc") differ.
  Hasher& field(std::string_view s);
  uint64_t value() const { return h_; }
  std::string hex() const;  // 16 lower-case hex digits

 private:
  uint64_t h_ = 0xcbf29ce484222325ULL;
};

// "fnv1a64:<hex>" of the files' bytes (in the order given, each with its name); absent files are skipped.
std::string fingerprint_files(const std::string& dir, const std::initializer_list<const char*>& names);

}  // namespace iomm
