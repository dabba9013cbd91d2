// Small filesystem helpers shared by every writer: atomic writes, so that a crash never leaves a half-written file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace iomm {

// Writes `path.tmp`, fsyncs it, renames it over `path`, and fsyncs the directory.
void write_file_atomic(const std::string& path, const void* data, size_t size);
inline void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}
std::string read_file(const std::string& path);
// Makes a directory's entries (creations, renames) durable; best effort, like write_file_atomic's own.
void fsync_dir(const std::string& dir);

}  // namespace iomm
