// Atomic file output: write to a temporary sibling, then rename over the target, so readers never see a
// half-written file (a crash leaves at most a stray `.tmp-*`).
#pragma once
#include <string>
#include <string_view>

namespace iomm::data {

void write_file_atomic(const std::string& path, std::string_view bytes);
// The temporary name used for `path` (same directory, so rename(2) is atomic).
std::string temp_path_for(const std::string& path);
// Renames `tmp` over `path`; fails naming both on error.
void commit_temp(const std::string& tmp, const std::string& path);

}  // namespace iomm::data
