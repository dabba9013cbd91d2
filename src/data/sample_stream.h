// The streaming loader: training images read from a DataSource (data/data_source.h) without ever holding the data
// set in memory, in an order fixed by (seed, epoch, rank) and independent of the number of workers.
//
// Per epoch e: the units (shards) are permuted by (seed, e); rank r of W takes units r, r+W, r+2W, ... of that
// order, so the ranks' epochs partition the data (no sample twice, none missed). One reader thread reads the
// rank's units in order into a shuffle buffer (seeded by (seed, e, r)); what leaves the buffer is the epoch's
// candidate sequence. A pool of decode workers turns candidates into images (decode, shorter side resize, centre
// crop), `prefetch` candidates ahead; results are handed out in candidate order, so threads never change what a
// run sees. Candidates that cannot be used are skipped and counted by cause (SkipCounts), the first of each named.
//
// The position (epoch, candidates consumed) is resumable: a stream restarted at a saved position re-reads its
// epoch up to that point without decoding, then goes on exactly as an uninterrupted run would have.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include "data/data_source.h"
#include "data/feature_cache.h"

namespace iomm::data {

struct StreamOptions {
  int resolution = 256;
  bool jpeg_draft = false;        // data.jpeg_draft: large JPEGs decode at reduced scale (image_pool.h)
  bool require_captions = false;  // pairs: samples without a caption are skipped (no_caption)
  uint64_t seed = 0;
  int64_t shuffle_buffer = 1000;  // samples; 1 = the rank's unit order as read
  int workers = 1;                // decode threads
  int64_t prefetch = 64;          // candidates read and decoded ahead of the consumer
  int rank = 0, world_size = 1;
  // The source is a feature cache (FeatureCache::source()): candidates are decoded into their cached features
  // (read_feature_sample) instead of images; `resolution` is then unused.
  bool features = false;
};

struct StreamPosition {
  int64_t epoch = 0;
  int64_t index = 0;  // candidates of this epoch already consumed (delivered or skipped)
};

struct StreamSample {
  at::Tensor image;     // uint8 [3, R, R]; undefined for a feature cache
  std::optional<FeatureSample> features;  // a feature cache's sample (StreamOptions::features)
  std::string caption;  // empty when the sample has none (and captions are not required)
  std::string key, shard;
  StreamPosition position;  // of this sample
};

class SampleStream {
 public:
  SampleStream(DataSource source, StreamOptions options);
  ~SampleStream();  // stops and joins the threads
  SampleStream(const SampleStream&) = delete;
  SampleStream& operator=(const SampleStream&) = delete;

  // The next usable sample; rolls over into the next epoch. Fails when an epoch had no usable sample, or a unit
  // could not be opened (naming it).
  StreamSample next();
  // The next usable sample of the current epoch, or nullopt at its end (position() is then the next epoch's
  // start): a whole epoch with exact counts, as `iomm data scan` reads it.
  std::optional<StreamSample> next_in_epoch();
  // Where the next call continues; with `skips()`, what a checkpoint records (`state()`).
  StreamPosition position() const;
  // Skips up to position(): the reader's (no_image, bad_member, damaged_shard, missing_file) travel with the next
  // candidate, the decoder's (undecodable, no_caption, bad_caption) are the candidates', so counts are exact at
  // any position and survive a restart.
  SkipCounts skips() const;
  int64_t delivered() const;  // usable samples handed out, over all epochs
  // After next() finished the first epoch on a single rank: the comparison of that epoch's counts with the data's
  // index.jsonl (check_against_index; also logged as a warning), "" when they agree or there is no index.
  const std::string& index_mismatch() const { return index_mismatch_; }

  // {"epoch", "index", "rank", "world_size", "seed", "shuffle_buffer", "units", "delivered",
  //  "skips": {"count": {cause: n}, "first": {cause: example}}}
  nlohmann::json state() const;
  // Continues from a saved state (before or after next() was called). Fails naming what differs when the state
  // was written for another rank, world size or seed.
  void restore(const nlohmann::json& state, const std::string& where);

  const DataSource& source() const { return source_; }
  const StreamOptions& options() const { return options_; }

 private:
  struct Pipeline;
  void start(StreamPosition at);
  void stop();

  DataSource source_;
  StreamOptions options_;
  std::unique_ptr<Pipeline> pipe_;
  StreamPosition pos_;
  SkipCounts skips_;  // up to pos_
  int64_t delivered_ = 0;
  bool epoch_had_sample_ = false;  // a usable sample was delivered in the current epoch
  std::string index_mismatch_;
};

// Decode, RGB, shorter side to `resolution` (bicubic), centre crop, and the caption (required or not): what both
// loaders do to a sample. Returns nullopt when `out` holds the sample, else why it is skipped (undecodable,
// no_caption, bad_caption, no_image).
std::optional<SampleSkip> prepare_sample(const Sample& raw, int resolution, bool require_caption, bool jpeg_draft,
                                        StreamSample& out);

// The same for a feature cache's sample: its cached tensors (skipped as undecodable when they do not parse) and
// caption (required or not, with the same rules as prepare_sample's: a pair needs a non-empty, valid UTF-8 caption
// and its cached input_ids).
std::optional<SampleSkip> prepare_feature_sample(const Sample& raw, bool require_caption, StreamSample& out);

// The rank's units for `epoch`, in reading order (exposed for tests and `iomm data scan`).
std::vector<size_t> epoch_units(size_t n_units, uint64_t seed, int64_t epoch, int rank, int world_size);

}  // namespace iomm::data
