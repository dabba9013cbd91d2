// Logging with levels (spdlog). Library code calls spdlog::info/warn/... directly; the CLI sets the level.
#pragma once
#include <string>

#include <spdlog/spdlog.h>

namespace iomm::log {

// level: trace|debug|info|warn|error. Also honours IOMM_LOG_LEVEL when `level` is empty.
void init(const std::string& level);
// Mirrors every message into `path` as well (e.g. RUN/train.log); appends.
void add_file(const std::string& path);
// Like add_file, but replaces the file set by the previous call (the current run's log.txt).
void set_run_file(const std::string& path);
// Files get every line as it is logged (flushed per line: a kill -9 or a full disk loses at most the line being
// written). fatal() writes the error that ends the process into those files only: the CLI prints it to stderr
// itself. Never throws.
void fatal(const std::string& message) noexcept;

}  // namespace iomm::log
