#include "core/log.h"

#include <algorithm>
#include <cstdlib>
#include <vector>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include "core/error.h"

namespace iomm::log {

static spdlog::level::level_enum parse_level(const std::string& s) {
  auto lvl = spdlog::level::from_str(s);
  if (lvl == spdlog::level::off && s != "off")
    fail("log level '{}' is not one of trace, debug, info, warn, error", s);
  return lvl;
}

void init(const std::string& level) {
  std::string l = level;
  if (const char* env = std::getenv("IOMM_LOG_LEVEL"); env && level.empty()) l = env;
  if (l.empty()) l = "info";
  auto logger = spdlog::stderr_color_mt("iomm");
  logger->set_pattern("%^[%H:%M:%S %L]%$ %v");
  logger->set_level(parse_level(l));
  spdlog::set_default_logger(logger);
}

static std::shared_ptr<spdlog::sinks::sink> file_sink(const std::string& path) {
  auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
  sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e %l] %v");
  return sink;
}

// The file sinks on the default logger, for fatal().
static std::vector<std::shared_ptr<spdlog::sinks::sink>>& files() {
  static std::vector<std::shared_ptr<spdlog::sinks::sink>> f;
  return f;
}

static void attach(std::shared_ptr<spdlog::sinks::sink> sink) {
  auto logger = spdlog::default_logger();
  // Flush per line: a buffered file lost the whole segment's log to a kill -9, and was left empty by a full disk.
  logger->flush_on(spdlog::level::trace);
  logger->sinks().push_back(sink);
  files().push_back(std::move(sink));
}

static void detach(const std::shared_ptr<spdlog::sinks::sink>& sink) {
  auto& sinks = spdlog::default_logger()->sinks();
  sinks.erase(std::remove(sinks.begin(), sinks.end(), sink), sinks.end());
  files().erase(std::remove(files().begin(), files().end(), sink), files().end());
}

void add_file(const std::string& path) { attach(file_sink(path)); }

void set_run_file(const std::string& path) {
  // One run log at a time: a process that runs several stages (the demo) logs each into its own run directory.
  static std::shared_ptr<spdlog::sinks::sink> current;
  if (current) detach(current);
  current = file_sink(path);
  attach(current);
}

void fatal(const std::string& message) noexcept {
  try {
    if (files().empty()) return;
    spdlog::logger to_files("iomm", files().begin(), files().end());
    to_files.set_level(spdlog::level::trace);
    to_files.critical("{}", message);
    to_files.flush();
  } catch (...) {
    // The process is ending on an error already reported to stderr; a log that cannot take it changes nothing.
  }
}

}  // namespace iomm::log
