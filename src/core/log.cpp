#include "core/log.h"

#include <algorithm>
#include <cstdlib>

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

void add_file(const std::string& path) { spdlog::default_logger()->sinks().push_back(file_sink(path)); }

void set_run_file(const std::string& path) {
  // One run log at a time: a process that runs several stages (the demo) logs each into its own run directory.
  static std::shared_ptr<spdlog::sinks::sink> current;
  auto& sinks = spdlog::default_logger()->sinks();
  if (current) sinks.erase(std::remove(sinks.begin(), sinks.end(), current), sinks.end());
  current = file_sink(path);
  sinks.push_back(current);
}

}  // namespace iomm::log
