// The images a generator stage trains on, behind one interface with two implementations (data.loader):
//   memory  the in-memory pools (data/image_pool.h): decoded once, drawn at random with replacement by the step's
//           generator. The tiny world uses it; it holds the whole data set, so it is for small sets only.
//   stream  the streaming loader (data/sample_stream.h): epochs of shuffled shards, never the whole set in memory,
//           its position saved in every checkpoint so a resumed run sees exactly the samples that follow.
// Both serve an image-only source and a pair source; the stage decides per sample which one (train.mix_ratio).
// A source may be a feature cache (`iomm cache`, data/feature_cache.h): the stream then hands out each sample's
// cached latents, c_img and caption input_ids instead of its image, and the step's batch is built from them
// (training_batch), with the loss the images would give.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include "conditioning/condition_sequence.h"
#include "data/feature_cache.h"

namespace iomm {

class Config;
struct TrainingBatch;

struct TrainingDataSettings {
  std::string data = "image";   // train.data: image | pair | mix
  std::string images, pairs;    // data.images, data.pairs
  std::string loader = "stream";  // data.loader: memory | stream
  int workers = 1;              // data.workers: decode threads (stream)
  int64_t prefetch = 64;        // data.prefetch: samples decoded ahead (stream)
  int64_t shuffle_buffer = 1000;  // data.shuffle_buffer (stream)
  bool jpeg_draft = false;        // data.jpeg_draft (stream): large JPEGs decode at reduced scale (data/image_pool.h)
  int rank = 0, world_size = 1;   // data-parallel position (stream: ranks read disjoint shards)
  bool cached = false;            // the sources read are feature caches (is_feature_cache)

  // data.loader, data.workers, data.prefetch, data.shuffle_buffer, data.jpeg_draft, data.images, data.pairs; `data` is train.data.
  // Fails naming the key when the data the stage needs is not set, when a feature cache is given to the memory
  // loader, or when one source is a cache and the other images.
  static TrainingDataSettings from_config(Config& cfg, const std::string& data);
  bool needs_pairs() const { return data != "image"; }
  bool images_from_pairs() const { return data != "pair" && images.empty(); }
  bool reads_images() const { return data != "pair" && !images.empty(); }  // the data.images source
  bool reads_pairs() const { return needs_pairs() || images.empty(); }     // the data.pairs source
};

struct TrainingImage {
  at::Tensor image;     // float [3, R, R] in [-1, 1]; undefined for a cached sample
  std::string caption;  // pairs only
  std::optional<data::FeatureSample> features;  // from a feature cache: latents, c_img, input_ids
};

class TrainingData {
 public:
  virtual ~TrainingData() = default;
  // One sample, from the image-only source (`image_only`) or else from the pairs. The memory pools draw which one
  // from `gen` (the sample's own generator, so the draw does not depend on how a batch is split); the streams hand
  // out their next sample.
  virtual TrainingImage take(bool image_only, at::Generator& gen) = 0;
  // The first `n` images of the image source, float [n, 3, R, R] in [-1, 1]: the reconstruction grids' inputs.
  virtual at::Tensor preview_images(int64_t n) = 0;
  // From a feature cache, which has no pixels: the image source's first `n` cached samples instead (the grids then
  // show their latents decoded); empty for image data.
  virtual std::vector<data::FeatureSample> preview_features(int64_t) { return {}; }
  // What a checkpoint records, and how a resumed run continues (null: nothing to record).
  virtual nlohmann::json state() const = 0;
  virtual void restore(const nlohmann::json& state, const std::string& where) = 0;
  // Added to each metrics.jsonl row (null: nothing), e.g. {"data_skipped": {"undecodable": 2}, "data_epoch": 1}.
  virtual nlohmann::json metrics() const = 0;
  virtual std::string summary() const = 0;  // for the log
};

// `model`: the run's feature fingerprints (IommModel::feature_fingerprints), required when s.cached: each cache is
// validated against them and refused, naming what differs and the fix, when made for other weights or settings.
std::unique_ptr<TrainingData> open_training_data(const TrainingDataSettings& s, int resolution, uint64_t seed,
                                                 const std::optional<data::FeatureFingerprints>& model = {});

// The micro-batch of the samples `taken` with their conditions (conds[i] for taken[i]): their images, or, when
// they come from a feature cache, their cached latents and c_img / input_ids (training_batch_from_features) by the
// conditions' kinds. Fails when the two kinds of sample are mixed.
TrainingBatch training_batch(std::vector<TrainingImage>& taken, std::vector<ConditionInput> conds);

}  // namespace iomm
