// `iomm data scan`: one epoch of a data set through the streaming loader (data/sample_stream.h), as training would
// read it: what is usable, what is skipped and why (the first example of each cause), images per second and the
// process's peak memory. Use it to check a data set before a long run, and to measure the loader on its own.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "data/sample_stream.h"

namespace iomm {

struct DataScanOptions {
  std::string data;
  data::StreamOptions stream;
  int64_t limit = 0;     // stop after this many usable samples (0 = the whole epoch)
  bool progress = true;
};

struct DataScanReport {
  int64_t units = 0, samples = 0, captioned = 0;
  data::SkipCounts skips;
  double seconds = 0, images_per_s = 0;
  double peak_rss_mib = 0;
  // A whole epoch on one rank compared with the data's index.jsonl (data/data_source.h): "" when they agree.
  std::string index_mismatch;
  uint64_t key_checksum = 0;  // order-independent hash of the delivered keys (rank splits add up to the whole)
  nlohmann::json to_json() const;
};

DataScanReport scan_data(const DataScanOptions& o);

// The process's peak resident set size in MiB (getrusage), for reports and benchmarks.
double peak_rss_mib();

}  // namespace iomm
