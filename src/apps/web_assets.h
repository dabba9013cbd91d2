// The web page of `iomm serve` (web/ in the source tree), embedded in the binary at build time by
// cmake/embed_files.cmake, so the page always matches the server it comes from.
#pragma once
#include <cstddef>
#include <string>

namespace iomm {

struct WebAsset {
  const char* path;           // "/index.html", "/app.js", ...
  const unsigned char* data;  // the file's bytes
  size_t size;
};

// The embedded file at `path` (as requested, leading slash), or nullptr.
const WebAsset* find_web_asset(const std::string& path);

}  // namespace iomm
