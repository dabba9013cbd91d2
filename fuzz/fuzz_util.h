// Shared by the fuzz targets (fuzz/README.md): a per-process scratch directory on tmpfs for the parsers that read
// a path, splitting one input into several files, and the one rule every target applies: a parser may refuse an
// input with iomm::Error (a message that names the file and the field); a crash, a sanitizer report, a hang or any
// other exception escaping is a finding.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/error.h"

namespace iomm::fuzz {

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// $IOMM_FUZZ_SCRATCH (scripts/fuzz.sh sets it) or /dev/shm: tmpfs, so the per-iteration files never reach a disk.
// Removed at a normal exit; a crashing run leaves it for the script to remove.
inline const std::string& scratch_dir() {
  // Never destroyed: the atexit cleanup runs after static destructors of objects built before it was registered.
  static const std::string* dir = [] {
    const char* root = std::getenv("IOMM_FUZZ_SCRATCH");
    auto d = std::filesystem::path(root && *root ? root : "/dev/shm") / ("iomm-fuzz-" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    std::atexit([] { std::error_code ec; std::filesystem::remove_all(scratch_dir(), ec); });
    return new std::string(d.string());
  }();
  return *dir;
}

inline std::string scratch_path(const std::string& name) { return scratch_dir() + "/" + name; }

inline void write_file(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

// The input cut at each `sep`, at most `max_parts` parts (the last keeps any further separators).
inline std::vector<std::string_view> split(std::string_view input, std::string_view sep, size_t max_parts) {
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < max_parts) {
    const size_t at = input.find(sep);
    if (at == std::string_view::npos) break;
    parts.push_back(input.substr(0, at));
    input.remove_prefix(at + sep.size());
  }
  parts.push_back(input);
  return parts;
}

// Runs `parse`; a refusal (iomm::Error) is the expected outcome for most inputs.
template <typename F>
int refusal_is_fine(F&& parse) {
  try {
    parse();
  } catch (const iomm::Error&) {
  }
  return 0;
}

// Warnings about odd but accepted input would flood the fuzzer's output.
inline void quiet_logs() { spdlog::set_level(spdlog::level::off); }

}  // namespace iomm::fuzz
