// JSONL metrics: one JSON object per line, flushed per line so that a crash loses nothing written.
// Readable by pandas.read_json(lines=True), jq, and the HTML report.
#pragma once
#include <cstdint>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace iomm {

class MetricsWriter {
 public:
  // append=true continues an existing file (resume); otherwise the file is truncated.
  explicit MetricsWriter(const std::string& path, bool append = false);
  void write(nlohmann::json record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

// On resume from step `step`: drops the rows with a "step" above it (the killed run wrote them past its last
// checkpoint; the resumed run writes them again), so that the file holds each step once. Other lines stay byte for
// byte; a half-written last line (a kill mid-write) goes too. Rewrites atomically; returns the rows dropped.
int64_t drop_rows_after_step(const std::string& path, int64_t step);

// Reads every record back (for reports and tests). Names the file and line on malformed input.
std::vector<nlohmann::json> read_jsonl(const std::string& path);

}  // namespace iomm
