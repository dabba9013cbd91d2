// The images a generator stage trains on, behind one interface with two implementations (data.loader):
//   memory  the in-memory pools (data/image_pool.h): decoded once, drawn at random with replacement by the step's
//           generator. The tiny world uses it; it holds the whole data set, so it is for small sets only.
//   stream  the streaming loader (data/sample_stream.h): epochs of shuffled shards, never the whole set in memory,
//           its position saved in every checkpoint so a resumed run sees exactly the samples that follow.
// Both serve an image-only source and a pair source; the stage decides per sample which one (train.mix_ratio).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

namespace iomm {

class Config;

struct TrainingDataSettings {
  std::string data = "image";   // train.data: image | pair | mix
  std::string images, pairs;    // data.images, data.pairs
  std::string loader = "stream";  // data.loader: memory | stream
  int workers = 1;              // data.workers: decode threads (stream)
  int64_t prefetch = 64;        // data.prefetch: samples decoded ahead (stream)
  int64_t shuffle_buffer = 1000;  // data.shuffle_buffer (stream)
  int rank = 0, world_size = 1;   // data-parallel position (stream: ranks read disjoint shards)

  // data.loader, data.workers, data.prefetch, data.shuffle_buffer, data.images, data.pairs; `data` is train.data.
  // Fails naming the key when the data the stage needs is not set.
  static TrainingDataSettings from_config(Config& cfg, const std::string& data);
  bool needs_pairs() const { return data != "image"; }
  bool images_from_pairs() const { return data != "pair" && images.empty(); }
};

struct TrainingImage {
  at::Tensor image;     // float [3, R, R] in [-1, 1]
  std::string caption;  // pairs only
};

class TrainingData {
 public:
  virtual ~TrainingData() = default;
  // Before the samples of a micro-batch of `batch` (after the stage's own draws from `gen`): the memory pools
  // draw their indices here, so their random sequence is what it always was.
  virtual void begin_batch(int64_t batch, at::Generator& gen) = 0;
  // Sample `i` of the batch: from the image-only source (`image_only`), else from the pairs.
  virtual TrainingImage take(bool image_only, int64_t i) = 0;
  // The first `n` images of the image source, float [n, 3, R, R] in [-1, 1]: the reconstruction grids' inputs.
  virtual at::Tensor preview_images(int64_t n) = 0;
  // What a checkpoint records, and how a resumed run continues (null: nothing to record).
  virtual nlohmann::json state() const = 0;
  virtual void restore(const nlohmann::json& state, const std::string& where) = 0;
  // Added to each metrics.jsonl row (null: nothing), e.g. {"data_skipped": {"undecodable": 2}, "data_epoch": 1}.
  virtual nlohmann::json metrics() const = 0;
  virtual std::string summary() const = 0;  // for the log
};

std::unique_ptr<TrainingData> open_training_data(const TrainingDataSettings& s, int resolution, uint64_t seed);

}  // namespace iomm
