#include "train/training_data.h"

#include <algorithm>
#include <optional>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "data/image_pool.h"
#include "data/sample_stream.h"
#include "model/features.h"
#include "model/iomm_model.h"

namespace iomm {

namespace {

// Which sources are feature caches: all that are read, or none, since a batch is built from images or from
// features; and only the stream reads caches (the memory loader decodes pixels).
void check_caches(Config& cfg, TrainingDataSettings& s) {
  const bool img = s.reads_images() && data::is_feature_cache(s.images);
  const bool pair = s.reads_pairs() && data::is_feature_cache(s.pairs);
  s.cached = img || pair;
  if (!s.cached) return;
  const char* key = img ? "images" : "pairs";
  const std::string& spec = img ? s.images : s.pairs;
  if (s.reads_images() && s.reads_pairs() && img != pair)
    fail("{}: data.{} = '{}' is a feature cache (it holds a cache manifest) but data.{} = '{}' is not: a run reads "
         "cached features from all its sources or from none; cache the other one too with `iomm cache --model M "
         "--data {} --out DIR` and point data.{} at DIR, or point data.{} at its images",
         cfg.source(), key, spec, img ? "pairs" : "images", img ? s.pairs : s.images, img ? s.pairs : s.images,
         img ? "pairs" : "images", key);
  if (s.loader == "memory")
    fail("{}: data.{} = '{}' is a feature cache, which only the streaming loader reads, but data.loader = "
         "\"memory\": set data.loader = \"stream\", or point data.{} at the images",
         cfg.source(), key, spec, key);
}

}  // namespace

TrainingDataSettings TrainingDataSettings::from_config(Config& cfg, const std::string& data) {
  TrainingDataSettings s;
  s.data = data;
  s.images = cfg.get_string("data.images", "");
  s.pairs = cfg.get_string("data.pairs", "");
  s.loader = cfg.get_choice("data.loader", s.loader, {"memory", "stream"});
  s.workers = int(cfg.get_int("data.workers", s.workers, 1, 256));
  s.prefetch = cfg.get_int("data.prefetch", s.prefetch, 1, 1 << 20);
  s.shuffle_buffer = cfg.get_int("data.shuffle_buffer", s.shuffle_buffer, 1, 1 << 24);
  s.jpeg_draft = cfg.get_bool("data.jpeg_draft", s.jpeg_draft);
  if (s.jpeg_draft && s.loader != "stream")
    fail("{}: data.jpeg_draft = true applies to the streaming loader; set data.loader = \"stream\" or drop "
         "data.jpeg_draft", cfg.source());
  if (s.needs_pairs() && s.pairs.empty())
    fail("{}: train.data = {} needs text-image pairs: set data.pairs to WebDataset shards with captions",
         cfg.source(), data);
  if (data != "pair" && s.images.empty() && s.pairs.empty())
    fail("{}: train.data = {} needs images: set data.images (image-only shards or an image folder)", cfg.source(),
         data);
  check_caches(cfg, s);
  return s;
}

namespace {

at::Tensor to_signed(const at::Tensor& u8) { return u8.to(torch::kFloat).div_(127.5).sub_(1.0); }

// data.loader = "memory": both pools decoded at start; indices drawn per batch from the step's generator.
class MemoryData : public TrainingData {
 public:
  MemoryData(const TrainingDataSettings& s, int resolution) {
    if (s.data != "pair" && !s.images.empty()) images_ = data::load_image_pool(s.images, resolution, false);
    if (s.needs_pairs() || s.images.empty()) pairs_ = data::load_image_pool(s.pairs, resolution, true);
    if (images_) spdlog::info("image-only data: {} ({})", s.images, images_->stats.summary());
    if (pairs_) spdlog::info("pairs: {} ({})", s.pairs, pairs_->stats.summary());
  }
  TrainingImage take(bool image_only, at::Generator& gen) override {
    auto& pool = image_only ? image_source() : *pairs_;
    int64_t k = torch::randint(pool.size(), {1}, gen).item<int64_t>();
    return {pool.batch({k})[0], image_only ? "" : pairs_->captions[size_t(k)], std::nullopt};
  }
  at::Tensor preview_images(int64_t n) override {
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < std::min(n, image_source().size()); ++i) idx.push_back(i);
    return image_source().batch(idx);
  }
  nlohmann::json state() const override { return nullptr; }
  void restore(const nlohmann::json&, const std::string&) override {}
  nlohmann::json metrics() const override { return nullptr; }
  std::string summary() const override {
    return fmt::format("in memory: {} image-only, {} pairs", images_ ? images_->size() : 0,
                       pairs_ ? pairs_->size() : 0);
  }

 private:
  const data::ImagePool& image_source() const { return images_ ? *images_ : *pairs_; }
  std::optional<data::ImagePool> images_, pairs_;
};

// A cache cut by `iomm cache --limit` is usable but holds part of its input (fewer units, so another order too).
void warn_if_partial(const data::FeatureCache& cache, const char* key) {
  int64_t expected = 0, shards = 0;
  bool cut = false;
  for (const auto& p : cache.parts()) {
    expected += (p.input_units - p.rank + p.world_size - 1) / p.world_size;  // units i with i % W == rank
    shards += int64_t(p.shards.size());
    for (const auto& s : p.shards) cut = cut || s.partial;
  }
  if (cut || shards < expected)
    spdlog::warn("data.{}: feature cache {} is partial (made with --limit): {} of its input's {} units, {} samples; "
                 "rerun the same `iomm cache` command without --limit to complete it",
                 key, cache.dir(), shards, expected, cache.samples());
}

// A source's units: its shards or files, or, for a feature cache, the cache's shards once it is validated against
// the run's model (refused naming the key, what differs and the fix).
data::DataSource open_source(const std::string& spec, const char* key, bool cached,
                             const std::optional<data::FeatureFingerprints>& model,
                             std::optional<data::FeatureCache>& cache) {
  if (!cached) return data::DataSource::open(spec);
  if (!model) fail("data.{} = '{}' is a feature cache, but no model fingerprints were given to check it", key, spec);
  try {
    cache = data::FeatureCache::open(spec);
    cache->validate(*model);
  } catch (const Error& e) {
    fail("data.{} = '{}' (read as a feature cache): {}", key, spec, e.what());
  }
  const auto& m = cache->parts().front();
  int64_t truncated = 0;
  for (const auto& p : cache->parts()) truncated += p.truncated_captions;
  spdlog::info("data.{}: feature cache {} of '{}', {} samples in {} shards, valid for this model ({} captions were "
               "truncated to max_text_tokens when cached); skipped when it was built: {}",
               key, spec, m.source, cache->samples(), cache->shard_paths().size(), truncated,
               cache->build_skips().summary());
  warn_if_partial(*cache, key);
  return cache->source();
}

// data.loader = "stream": an image-only stream and a pair stream, each consumed in its own order; from feature
// caches, the same streams over the caches' shards hand out cached features instead of images.
class StreamData : public TrainingData {
 public:
  StreamData(const TrainingDataSettings& s, int resolution, uint64_t seed,
             const std::optional<data::FeatureFingerprints>& model)
      : resolution_(resolution) {
    data::StreamOptions o;
    o.resolution = resolution;
    o.workers = s.workers;
    o.prefetch = s.prefetch;
    o.shuffle_buffer = s.shuffle_buffer;
    o.jpeg_draft = s.jpeg_draft;
    o.rank = s.rank;
    o.world_size = s.world_size;
    o.features = s.cached;
    if (s.reads_images()) {
      o.seed = seed;
      images_.emplace(open_source(s.images, "images", s.cached, model, images_cache_), o);
    }
    if (s.reads_pairs()) {
      o.seed = seed + 1;  // another order than the image stream's, should both read the same shards
      o.require_captions = true;
      pairs_.emplace(open_source(s.pairs, "pairs", s.cached, model, pairs_cache_), o);
    }
  }
  TrainingImage take(bool image_only, at::Generator&) override {
    auto x = (image_only ? image_source() : *pairs_).next();
    std::string caption = image_only ? "" : x.caption;
    if (x.features) return {at::Tensor(), std::move(caption), std::move(x.features)};
    return {to_signed(x.image), std::move(caption), std::nullopt};
  }
  std::vector<data::FeatureSample> preview_features(int64_t n) override {
    const auto& cache = images_ ? images_cache_ : pairs_cache_;
    if (!cache) return {};
    if (preview_features_.empty()) {  // the source's first samples in shard order, read once
      data::FeatureCacheReader reader(*cache);
      data::FeatureSample f;
      while (int64_t(preview_features_.size()) < n && reader.next(f)) preview_features_.push_back(f);
    }
    return {preview_features_.begin(), preview_features_.begin() + std::min(n, int64_t(preview_features_.size()))};
  }
  at::Tensor preview_images(int64_t n) override {
    if (images_cache_ || pairs_cache_)
      fail("the training data is a feature cache, which has no images to preview; use preview_features()");
    if (!preview_.defined()) {  // the source's first images in file order, read once
      auto& src = image_source();
      auto pool = data::load_image_pool(src.source().spec, resolution_, src.options().require_captions, n, false);
      preview_ = pool.images;
    }
    return to_signed(preview_.slice(0, 0, n));
  }
  nlohmann::json state() const override {
    nlohmann::json j;
    if (images_) j["images"] = images_->state();
    if (pairs_) j["pairs"] = pairs_->state();
    return j;
  }
  void restore(const nlohmann::json& st, const std::string& where) override {
    if (st.is_null()) {
      spdlog::warn("{} holds no data position (the run was started with data.loader = \"memory\"): the streams "
                   "start at their first sample",
                   where);
      return;
    }
    restore_one(images_, st, "images", where);
    restore_one(pairs_, st, "pairs", where);
  }
  nlohmann::json metrics() const override {
    nlohmann::json skipped = nlohmann::json::object(), j;
    for (auto* s : {images_ ? &*images_ : nullptr, pairs_ ? &*pairs_ : nullptr})
      if (s)
        for (auto& [cause, n] : s->skips().count) skipped[cause] = skipped.value(cause, int64_t{0}) + n;
    j["data_skipped"] = skipped;
    j["data_epoch"] = image_source().position().epoch;
    return j;
  }
  std::string summary() const override {
    std::string s;
    if (images_) s += describe("image-only", *images_);
    if (pairs_) s += (s.empty() ? "" : "; ") + describe("pairs", *pairs_);
    return s;
  }

 private:
  static std::string describe(const char* what, const data::SampleStream& s) {
    auto p = s.position();
    return fmt::format("{} {}: {} units, epoch {} at sample {}, {} delivered; skipped: {}", what, s.source().spec,
                       s.source().units.size(), p.epoch, p.index, s.delivered(), s.skips().summary());
  }
  static void restore_one(std::optional<data::SampleStream>& s, const nlohmann::json& st, const char* key,
                          const std::string& where) {
    if (!s) return;
    if (!st.contains(key))
      fail("{}: the data position has no \"{}\" stream, but this run reads one: resume with the run's own "
           "train.data, or start a new run",
           where, key);
    s->restore(st.at(key), where);
  }
  data::SampleStream& image_source() { return images_ ? *images_ : *pairs_; }
  const data::SampleStream& image_source() const { return images_ ? *images_ : *pairs_; }

  int resolution_;
  std::optional<data::FeatureCache> images_cache_, pairs_cache_;  // declared before the streams that read them
  std::optional<data::SampleStream> images_, pairs_;
  at::Tensor preview_;
  std::vector<data::FeatureSample> preview_features_;
};

}  // namespace

std::unique_ptr<TrainingData> open_training_data(const TrainingDataSettings& s, int resolution, uint64_t seed,
                                                 const std::optional<data::FeatureFingerprints>& model) {
  if (s.loader == "memory") return std::make_unique<MemoryData>(s, resolution);
  return std::make_unique<StreamData>(s, resolution, seed, model);
}

TrainingBatch training_batch(std::vector<TrainingImage>& taken, std::vector<ConditionInput> conds) {
  const auto cached = std::count_if(taken.begin(), taken.end(), [](const auto& x) { return x.features.has_value(); });
  TrainingBatch b;
  if (cached == 0) {
    std::vector<at::Tensor> images;
    for (const auto& x : taken) images.push_back(x.image);
    b.images = torch::stack(images);
    b.conds = std::move(conds);
    return b;
  }
  if (size_t(cached) != taken.size() || conds.size() != taken.size())
    fail("a micro-batch of {} samples has {} cached ones and {} conditions: a batch is built from images or from "
         "cached features, not both",
         taken.size(), cached, conds.size());
  std::vector<data::FeatureSample> samples;
  std::vector<ConditionKind> kinds;
  for (size_t i = 0; i < taken.size(); ++i) {
    samples.push_back(std::move(*taken[i].features));
    kinds.push_back(conds[i].kind);
  }
  return training_batch_from_features(samples, kinds);
}

}  // namespace iomm
