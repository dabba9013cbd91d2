#include "apps/data_scan.h"

#include <sys/resource.h>

#include <chrono>
#include <functional>
#include <optional>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/progress.h"

namespace iomm {

double peak_rss_mib() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;  // kilobytes on Linux
}

nlohmann::json DataScanReport::to_json() const {
  return {{"units", units},
          {"samples", samples},
          {"captioned", captioned},
          {"skipped", skips.count},
          {"first_skipped", skips.first},
          {"seconds", seconds},
          {"images_per_s", images_per_s},
          {"peak_rss_mib", peak_rss_mib},
          {"key_checksum", key_checksum},
          {"index_mismatch", index_mismatch.empty() ? nlohmann::json(nullptr) : nlohmann::json(index_mismatch)}};
}

DataScanReport scan_data(const DataScanOptions& o) {
  auto t0 = std::chrono::steady_clock::now();
  data::SampleStream stream(data::DataSource::open(o.data), o.stream);
  DataScanReport r;
  r.units = int64_t(stream.source().units.size());
  // The epoch's sample count is not known before reading it: the bar counts up with its rate.
  std::optional<ProgressBar> bar;
  if (o.progress) bar.emplace(o.limit > 0 ? o.limit : 0, "scan " + o.data, "img");
  while (o.limit == 0 || r.samples < o.limit) {
    auto s = stream.next_in_epoch();
    if (!s) break;
    ++r.samples;
    if (!s->caption.empty()) ++r.captioned;
    r.key_checksum += std::hash<std::string>{}(s->shard + "\n" + s->key);
    if (bar) bar->update(1);
  }
  if (bar) bar->finish();
  r.skips = stream.skips();
  const bool whole = o.limit == 0 || r.samples < o.limit;
  if (whole && o.stream.world_size == 1) {
    r.index_mismatch = data::check_against_index(stream.source(), r.samples, r.skips);
    if (!r.index_mismatch.empty()) spdlog::warn("{}", r.index_mismatch);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.images_per_s = double(r.samples) / std::max(r.seconds, 1e-9);
  r.peak_rss_mib = peak_rss_mib();
  return r;
}

}  // namespace iomm
