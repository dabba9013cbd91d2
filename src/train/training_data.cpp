#include "train/training_data.h"

#include <optional>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "data/image_pool.h"
#include "data/sample_stream.h"

namespace iomm {

TrainingDataSettings TrainingDataSettings::from_config(Config& cfg, const std::string& data) {
  TrainingDataSettings s;
  s.data = data;
  s.images = cfg.get_string("data.images", "");
  s.pairs = cfg.get_string("data.pairs", "");
  s.loader = cfg.get_choice("data.loader", s.loader, {"memory", "stream"});
  s.workers = int(cfg.get_int("data.workers", s.workers, 1, 256));
  s.prefetch = cfg.get_int("data.prefetch", s.prefetch, 1, 1 << 20);
  s.shuffle_buffer = cfg.get_int("data.shuffle_buffer", s.shuffle_buffer, 1, 1 << 24);
  if (s.needs_pairs() && s.pairs.empty())
    fail("{}: train.data = {} needs text-image pairs: set data.pairs to WebDataset shards with captions",
         cfg.source(), data);
  if (data != "pair" && s.images.empty() && s.pairs.empty())
    fail("{}: train.data = {} needs images: set data.images (image-only shards or an image folder)", cfg.source(),
         data);
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
  void begin_batch(int64_t B, at::Generator& gen) override {
    i_img_ = torch::randint(image_source().size(), {B}, gen);
    i_pair_ = torch::randint(pairs_ ? pairs_->size() : 1, {B}, gen);
  }
  TrainingImage take(bool image_only, int64_t i) override {
    if (image_only) return {image_source().batch({i_img_[i].item<int64_t>()})[0], ""};
    int64_t k = i_pair_[i].item<int64_t>();
    return {pairs_->batch({k})[0], pairs_->captions[size_t(k)]};
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
  at::Tensor i_img_, i_pair_;
};

// data.loader = "stream": an image-only stream and a pair stream, each consumed in its own order.
class StreamData : public TrainingData {
 public:
  StreamData(const TrainingDataSettings& s, int resolution, uint64_t seed) : resolution_(resolution) {
    data::StreamOptions o;
    o.resolution = resolution;
    o.workers = s.workers;
    o.prefetch = s.prefetch;
    o.shuffle_buffer = s.shuffle_buffer;
    o.rank = s.rank;
    o.world_size = s.world_size;
    if (s.data != "pair" && !s.images.empty()) {
      o.seed = seed;
      images_.emplace(data::DataSource::open(s.images), o);
    }
    if (s.needs_pairs() || s.images.empty()) {
      o.seed = seed + 1;  // another order than the image stream's, should both read the same shards
      o.require_captions = true;
      pairs_.emplace(data::DataSource::open(s.pairs), o);
    }
  }
  void begin_batch(int64_t, at::Generator&) override {}
  TrainingImage take(bool image_only, int64_t) override {
    auto x = (image_only ? image_source() : *pairs_).next();
    return {to_signed(x.image), image_only ? "" : x.caption};
  }
  at::Tensor preview_images(int64_t n) override {
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
  std::optional<data::SampleStream> images_, pairs_;
  at::Tensor preview_;
};

}  // namespace

std::unique_ptr<TrainingData> open_training_data(const TrainingDataSettings& s, int resolution, uint64_t seed) {
  if (s.loader == "memory") return std::make_unique<MemoryData>(s, resolution);
  return std::make_unique<StreamData>(s, resolution, seed);
}

}  // namespace iomm
