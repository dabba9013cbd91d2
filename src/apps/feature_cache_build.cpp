#include "apps/feature_cache_build.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/progress.h"
#include "data/data_source.h"
#include "data/image_pool.h"
#include "data/sample_stream.h"
#include "data/webdataset.h"
#include "model/features.h"
#include "model/iomm_model.h"
#include "model/model_dir.h"

namespace iomm {

namespace fs = std::filesystem;

Config cache_model_config(const std::vector<std::string>& model, const std::vector<std::string>& overrides) {
  if (model.empty()) fail("iomm cache: --model is required (a model directory with iomm.toml, or TOML configs)");
  Config cfg;
  for (const auto& m : model) {
    if (fs::is_directory(m)) {
      bool run_dir = !fs::exists(fs::path(m) / "iomm.toml") && fs::exists(fs::path(m) / "model" / "iomm.toml");
      cfg.merge(load_model_toml(run_dir ? (fs::path(m) / "model").string() : m));
    } else if (fs::is_regular_file(m)) {
      cfg.merge(Config::load(m));
    } else {
      fail("iomm cache: --model '{}' does not exist; give a model directory (iomm.toml) or a TOML config", m);
    }
  }
  for (const auto& o : overrides) cfg.set(o);
  return cfg;
}

namespace {

// The input units: DataSource's resolver (every data spec form training takes), with --folder-unit files per unit
// of an image folder or a JSONL index of files. Unit i becomes shard features-{i:06d}.tar.
data::DataSource open_inputs(const std::string& spec, int64_t per_unit) {
  data::DataSource src;
  try {
    src = data::DataSource::open(spec, per_unit);
  } catch (const Error& e) {
    fail("iomm cache: --data: {}", e.what());
  }
  if (src.units.empty()) fail("iomm cache: --data '{}' holds no images", spec);
  return src;
}

// The manifest's unit kind: "tar" for shards, "folder:N" for groups of N image files.
std::string unit_kind(const data::DataSource& src) {
  return src.units.front().shard.empty() ? fmt::format("folder:{}", src.files_per_unit) : "tar";
}

struct Pending {
  std::string key;
  std::optional<std::string> caption;
  at::Tensor image;  // uint8 [3, R, R]
};

// WebDataset keys end at the first dot of a name; a folder file "a.b.png" becomes key "a_b".
std::string cache_key(std::string key) {
  std::replace(key.begin(), key.end(), '.', '_');
  return key;
}

// Encodes `batch` and appends its samples to the shard.
void write_batch(FeatureEncoder& enc, std::vector<Pending>& batch, data::TarWriter& tar, data::CacheShard& shard,
                 data::FeatureManifest& m) {
  std::vector<at::Tensor> images;
  for (const auto& p : batch) images.push_back(p.image);
  auto f = enc.encode(data::to_model_range(torch::stack(images)));
  auto latents = f.latents.cpu(), c_img = f.c_img.cpu();
  if (m.latent_shape.empty()) {
    m.latent_shape = latents[0].sizes().vec();
    m.c_img_shape = c_img[0].sizes().vec();
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    data::FeatureSample s{batch[i].key, latents[int64_t(i)].clone(), c_img[int64_t(i)].clone(), {}, batch[i].caption};
    if (s.caption) {
      bool cut = false;
      s.input_ids = enc.caption_ids(*s.caption, cut);
      ++shard.captions;
      shard.truncated_captions += cut;
    }
    for (const auto& [ext, bytes] : data::feature_members(s)) tar.add(s.key + "." + ext, bytes.data(), bytes.size());
    ++shard.samples;
  }
  batch.clear();
}

// One image for the cache: decoded and cropped as training does (data::prepare_sample), its caption kept when usable.
// An unusable caption (not UTF-8, a broken .json) leaves the image cached without one, counted in `bad_captions`.
std::optional<data::SampleSkip> prepare(const data::Sample& raw, int resolution, bool jpeg_draft, Pending& out,
                                        int64_t& bad_captions) {
  data::StreamSample s;
  // The caption first, no decode.
  auto skip = data::prepare_sample(raw, resolution, /*require_caption=*/true, jpeg_draft, s);
  if (skip && (skip->cause == "no_caption" || skip->cause == "bad_caption")) {
    bad_captions += skip->cause == "bad_caption";
    skip = data::prepare_sample(raw, resolution, /*require_caption=*/false, jpeg_draft, s);
  }
  if (skip) return skip;
  out = {cache_key(raw.key), std::nullopt, s.image};
  if (!s.caption.empty()) out.caption = s.caption;
  return std::nullopt;
}

// One unit -> one shard (at most `max_samples` samples when > 0; the shard is then partial if the unit had more).
// Damage is counted by cause as the training stream counts it (read_unit, prepare_sample).
data::CacheShard cache_unit(FeatureEncoder& enc, const data::DataSource& in, int64_t unit, const std::string& dir,
                            int64_t batch_size, int64_t max_samples, bool jpeg_draft, data::FeatureManifest& m) {
  data::CacheShard shard;
  shard.name = fmt::format("features-{:06d}.tar", unit);
  data::TarWriter tar((fs::path(dir) / shard.name).string());
  data::SkipCounts skips;
  std::vector<Pending> batch;
  int64_t taken = 0;
  data::read_unit(in.units[size_t(unit)], skips, [&](data::Sample&& raw) {
    if (max_samples > 0 && taken == max_samples) {  // the rest of the unit is read (its damage counted), not cached
      shard.partial = true;
      return;
    }
    Pending p;
    if (auto skip = prepare(raw, int(enc.resolution()), jpeg_draft, p, shard.bad_captions)) {
      if (!skips.count.count(skip->cause))
        spdlog::warn("iomm cache: skipping a sample ({}): {}", skip->cause, skip->example);
      skips.add(skip->cause, skip->example);
      return;
    }
    batch.push_back(std::move(p));
    ++taken;
    if (int64_t(batch.size()) == batch_size) write_batch(enc, batch, tar, shard, m);
  });
  if (!batch.empty()) write_batch(enc, batch, tar, shard, m);
  for (const auto& [cause, n] : skips.count) shard.skipped[cause] += n;
  tar.close();
  return shard;
}

}  // namespace

namespace {

data::FeatureManifest new_manifest(const CacheOptions& o, const data::DataSource& in, const FeatureEncoder& enc) {
  data::FeatureManifest m;
  m.fingerprints = enc.fingerprints();
  m.preprocess = o.jpeg_draft ? data::kTrainingPreprocessJpegDraft : data::kTrainingPreprocess;
  if (const auto* c = enc.autoencoder().flux_config()) {
    m.latent_scale = c->scaling_factor;
    m.latent_shift = c->shift_factor;
  }
  m.source = o.data;
  m.unit = unit_kind(in);
  m.input_units = int64_t(in.units.size());
  m.rank = o.rank;
  m.world_size = o.world_size;
  m.limit = o.limit;
  return m;
}

// An earlier run's manifest in --out: its finished shards are kept when it was made the same way; anything else
// there is refused rather than mixed in.
void keep_earlier_shards(const CacheOptions& o, data::FeatureManifest& m) {
  auto path = data::manifest_path(o.out, o.rank, o.world_size);
  auto old = data::read_manifest(path);
  if (!old) return;
  auto diff = data::fingerprint_differences(old->fingerprints, m.fingerprints);
  if (!diff.empty())
    fail("iomm cache: {} holds a cache made with {}; give another --out or delete that directory to rebuild it",
         o.out, fmt::join(diff, "; "));
  if (old->preprocess != m.preprocess)
    fail("iomm cache: {} holds a cache preprocessed as '{}', this run preprocesses as '{}' ({}--jpeg-draft); give "
         "another --out or rerun as it was made",
         o.out, old->preprocess, m.preprocess, o.jpeg_draft ? "" : "no ");
  if (old->source != m.source || old->unit != m.unit || old->input_units != m.input_units)
    fail("iomm cache: {} holds a cache of --data '{}' ({} units of {}), not of '{}' ({} units of {}); give another "
         "--out",
         o.out, old->source, old->input_units, old->unit, m.source, m.input_units, m.unit);
  for (const auto& s : old->shards)
    if (!s.partial && fs::exists(fs::path(o.out) / s.name)) m.shards.push_back(s);
  m.latent_shape = old->latent_shape;
  m.c_img_shape = old->c_img_shape;
  m.total();
  if (!m.shards.empty())
    spdlog::info("iomm cache: resuming {}: {} finished shards ({} samples) kept", o.out, m.shards.size(), m.samples);
}

void check_options(const CacheOptions& o) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size)
    fail("iomm cache: --rank {} --world-size {}: the rank must be in [0, world size)", o.rank, o.world_size);
  if (o.batch_size < 1 || o.batch_size > 65536) fail("iomm cache: --batch-size {} is not in [1, 65536]", o.batch_size);
  if (o.limit < 0) fail("iomm cache: --limit {} is negative (0 = no limit)", o.limit);
  if (o.folder_unit < 1) fail("iomm cache: --folder-unit {} must be >= 1", o.folder_unit);
  if (o.out.empty()) fail("iomm cache: --out is required");
}

}  // namespace

int64_t check_feature_cache(const CacheOptions& o) {
  Config cfg = cache_model_config(o.model, o.overrides);
  FeatureEncoder enc(IommModelConfig::from_config(cfg));
  auto cache = data::FeatureCache::open(o.out);
  cache.validate(enc.fingerprints());
  return cache.samples();
}

CacheResult build_feature_cache(const CacheOptions& o) {
  check_options(o);
  auto t0 = std::chrono::steady_clock::now();
  Config cfg = cache_model_config(o.model, o.overrides);
  auto mc = IommModelConfig::from_config(cfg);
  auto in = open_inputs(o.data, o.folder_unit);
  FeatureEncoder enc(mc);
  fs::create_directories(o.out);
  CacheResult r;
  auto& m = r.manifest;
  m = new_manifest(o, in, enc);
  keep_earlier_shards(o, m);
  std::vector<int64_t> todo;
  for (int64_t u = o.rank; u < int64_t(in.units.size()); u += o.world_size) {
    auto name = fmt::format("features-{:06d}.tar", u);
    fs::remove(fs::path(o.out) / (name + ".tmp"));  // a write a kill tore (the tar is only renamed when complete)
    if (std::none_of(m.shards.begin(), m.shards.end(), [&](const auto& s) { return s.name == name; }))
      todo.push_back(u);
  }
  ProgressBar bar(int64_t(todo.size()), fmt::format("cache rank {}/{}", o.rank, o.world_size), "shard");
  auto t_loop = std::chrono::steady_clock::now();
  for (int64_t u : todo) {
    if (o.limit > 0 && m.samples >= o.limit) break;
    auto shard = cache_unit(enc, in, u, o.out, o.batch_size, o.limit > 0 ? o.limit - m.samples : 0, o.jpeg_draft, m);
    r.new_samples += shard.samples;
    m.shards.push_back(shard);
    std::sort(m.shards.begin(), m.shards.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    m.total();
    data::write_manifest(o.out, m);  // after the shard's rename: a listed shard is complete
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_loop).count();
    bar.update(1, fmt::format("{} img, {:.1f} img/s", m.samples, double(r.new_samples) / std::max(s, 1e-9)));
  }
  bar.finish();
  m.finished = true;
  data::write_manifest(o.out, m);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace iomm
