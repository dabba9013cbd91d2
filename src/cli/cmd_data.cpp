// `iomm data scan`: check a data set, and measure the streaming loader, before training on it (apps/data_scan.h).
#include <iostream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "apps/data_scan.h"
#include "cli/command.h"

namespace {

struct ScanArgs {
  iomm::DataScanOptions o;
  bool json = false, captions = false;
};

iomm::cli::Register reg{{"data", "Training data: scan a data set through the streaming loader",
  [](CLI::App& app) {
    app.require_subcommand(1);
    auto a = std::make_shared<ScanArgs>();
    CLI::App* s = app.add_subcommand("scan", "Read one epoch as training would: usable samples, skips by cause "
                                             "(first example of each), images/s, peak memory");
    s->add_option("--data", a->o.data, "shards (dir, .tar, brace range, .txt list), image folder or .jsonl index")
        ->required();
    s->add_option("--resolution", a->o.stream.resolution, "decode + centre-crop side")->check(CLI::Range(1, 8192));
    s->add_flag("--captions", a->captions, "require captions (pairs): samples without one are skipped");
    s->add_flag("--jpeg-draft", a->o.stream.jpeg_draft,
                "decode JPEGs at least twice --resolution at reduced scale first (data.jpeg_draft)");
    s->add_option("--workers", a->o.stream.workers, "decode threads")->check(CLI::Range(1, 256));
    s->add_option("--prefetch", a->o.stream.prefetch, "samples decoded ahead")->check(CLI::Range(1, 1 << 20));
    s->add_option("--shuffle-buffer", a->o.stream.shuffle_buffer, "shuffle buffer (samples)")
        ->check(CLI::Range(1, 1 << 24));
    s->add_option("--seed", a->o.stream.seed, "shuffle seed");
    s->add_option("--rank", a->o.stream.rank, "this process's rank")->check(CLI::NonNegativeNumber);
    s->add_option("--world-size", a->o.stream.world_size, "number of ranks")->check(CLI::PositiveNumber);
    s->add_option("--limit", a->o.limit, "stop after N usable samples")->check(CLI::NonNegativeNumber);
    s->add_flag("--json", a->json, "print the report as one JSON object");
    return [a]() -> int {
      a->o.stream.require_captions = a->captions;
      a->o.progress = !a->json;
      auto r = iomm::scan_data(a->o);
      if (a->json) {
        std::cout << r.to_json().dump() << "\n";
        return 0;
      }
      spdlog::info("data scan {}: {} usable samples ({} with captions) from {} units in {:.1f}s ({:.0f} img/s with "
                   "{} workers), peak RSS {:.0f} MiB; skipped: {}",
                   a->o.data, r.samples, r.captioned, r.units, r.seconds, r.images_per_s, a->o.stream.workers,
                   r.peak_rss_mib, r.skips.summary());
      return 0;
    };
  }}};

}  // namespace
