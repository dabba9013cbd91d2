// `iomm cache --model M --data SHARDS --out DIR [--batch-size N] [--rank R --world-size W] [--limit N]`: computes the
// frozen models' features (FLUX latents, the MLLM's image tokens, caption token ids) once, as a feature cache
// (apps/feature_cache_build.h, docs/data.md). Rerunning the same command resumes an interrupted cache;
// `iomm cache --check --model M --out DIR` validates a cache against a model.
#include <algorithm>
#include <memory>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "apps/feature_cache_build.h"
#include "cli/command.h"
#include "core/error.h"

namespace {

int run(const iomm::CacheOptions& o, bool check) {
  if (check) {
    auto n = iomm::check_feature_cache(o);
    spdlog::info("cache: {} ({} samples) was made with this model's frozen weights, resolution and tokenizer", o.out,
                 n);
    return 0;
  }
  auto r = iomm::build_feature_cache(o);
  const auto& m = r.manifest;
  spdlog::info("cache: {} samples in {} shards ({} with captions, {} captions truncated, {} unusable captions "
               "dropped; skipped: {}) -> {} ({} encoded now, {:.1f} s, {:.1f} img/s)",
               m.samples, m.shards.size(), m.captions, m.truncated_captions, m.bad_captions,
               m.skipped.empty() ? std::string("none") : fmt::format("{}", m.skipped), o.out, r.new_samples,
               r.seconds, double(r.new_samples) / std::max(r.seconds, 1e-9));
  if (m.limit > 0) spdlog::info("cache: stopped at --limit {}; rerun without --limit to complete it", m.limit);
  return 0;
}

iomm::cli::Register reg{{"cache", "Precompute the frozen models' features (latents, image tokens) of a training set",
  [](CLI::App& app) {
    auto o = std::make_shared<iomm::CacheOptions>();
    app.add_option("--model", o->model,
                   "model directory (iomm.toml), run directory, or TOML config(s) as `iomm train --config` takes")
        ->required();
    app.add_option("--set", o->overrides, "override a config key, e.g. --set model.mllm=U/model (repeatable)");
    auto check = std::make_shared<bool>(false);
    app.add_flag("--check", *check, "validate the cache in --out against --model instead of writing (no --data)");
    app.add_option("--data", o->data,
                   "what data.images / data.pairs take: .tar, directory of shards, brace range, shard list .txt, image "
                   "folder or .jsonl index");
    app.add_option("--out", o->out, "cache directory (rerun the same command to resume it)")->required();
    app.add_option("--batch-size", o->batch_size, "images encoded together");
    app.add_flag("--jpeg-draft", o->jpeg_draft,
                 "decode JPEGs at least twice the resolution at 1/2, 1/4 or 1/8 scale first (libjpeg DCT scaling, "
                 "Pillow's draft): several times faster, pixels within a few levels of the exact preprocessing");
    app.add_option("--rank", o->rank, "this process's rank: it caches input units i with i % world-size == rank");
    app.add_option("--world-size", o->world_size, "number of ranks caching the same data into --out");
    app.add_option("--limit", o->limit, "stop once this rank's cache holds N samples (0 = all)");
    app.add_option("--folder-unit", o->folder_unit, "images per shard when --data is an image folder or a JSONL index of images");
    return [o, check]() -> int {
      if (!*check && o->data.empty())
        iomm::fail("iomm cache: --data is required (WebDataset shards, an image folder, a shard list or a JSONL index); "
                   "only --check goes without");
      return run(*o, *check);
    };
  }}};

}  // namespace
