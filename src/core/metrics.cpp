#include "core/metrics.h"

#include <chrono>
#include <filesystem>
#include <optional>
#include <string_view>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/fs.h"

namespace iomm {

MetricsWriter::MetricsWriter(const std::string& path, bool append)
    : path_(path), out_(path, append ? std::ios::app : std::ios::trunc) {
  if (!out_) fail("cannot open metrics file '{}' for writing: check that its directory exists and is writable", path);
}

void MetricsWriter::write(nlohmann::json record) {
  if (!record.contains("time")) {
    auto now = std::chrono::system_clock::now().time_since_epoch();
    record["time"] = std::chrono::duration<double>(now).count();
  }
  out_ << record.dump() << '\n';
  out_.flush();
  if (!out_) fail("writing metrics to '{}' failed (disk full?)", path_);
}

namespace {

// Whether a metrics line is a row of a step after `step`. A torn last line is reported as nullopt.
std::optional<bool> is_after(std::string_view line, bool last_and_unterminated, int64_t step,
                             const std::string& where) {
  nlohmann::json row;
  try {
    row = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    if (last_and_unterminated) return std::nullopt;
    fail("{}: not valid JSON ({}); each line of a metrics file must be one JSON object: remove or mend the line, "
         "then resume again",
         where, e.what());
  }
  return row.is_object() && row.contains("step") && row["step"].is_number() && row["step"].get<double>() > step;
}

}  // namespace

int64_t drop_rows_after_step(const std::string& path, int64_t step) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return 0;
  const std::string text = read_file(path);
  std::string kept;
  int64_t dropped = 0;
  int lineno = 0;
  for (size_t pos = 0; pos < text.size();) {
    const size_t nl = text.find('\n', pos);
    const size_t end = nl == std::string::npos ? text.size() : nl;
    const std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const auto after = is_after(line, nl == std::string::npos, step, fmt::format("{}:{}", path, lineno));
    if (!after) spdlog::warn("{}:{}: dropping a half-written last line (the run was killed while writing it)", path,
                             lineno);
    if (!after || *after) {
      ++dropped;
      continue;
    }
    kept.append(line);
    kept += '\n';
  }
  if (kept != text) write_file_atomic(path, kept);
  if (dropped)
    spdlog::info("{}: dropped {} rows past step {}; the resumed run writes those steps again", path, dropped, step);
  return dropped;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("cannot open JSONL file '{}'", path);
  std::vector<nlohmann::json> out;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      out.push_back(nlohmann::json::parse(line));
    } catch (const nlohmann::json::exception& e) {
      fail("{}:{}: not valid JSON ({}); each line of a JSONL file must be one JSON object", path, lineno, e.what());
    }
  }
  return out;
}

}  // namespace iomm
