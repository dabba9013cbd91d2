#include "core/metrics.h"

#include <chrono>

#include "core/error.h"

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
