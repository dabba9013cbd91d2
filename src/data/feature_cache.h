// The feature cache (`iomm cache`, docs/data.md): what the frozen models make of each training image, computed
// once instead of at every step. A cache directory holds WebDataset shards `features-NNNNNN.tar` (one per input
// unit: an input .tar, or a chunk of an image folder), each sample with members
//   KEY.features.safetensors   latents [C, h, w] (the autoencoder's posterior MEAN, scaled and shifted: what the
//                              objective trains on), c_img [T, D] (InternViT → pixel shuffle → mlp1, BEFORE the MIM
//                              mask, which is drawn per step), input_ids [L] int64 (the templated text-condition
//                              row of the caption; only with a caption)
//   KEY.txt                    the caption, when there is one
// and a manifest (manifest.json, or manifest.rank-R.json per rank with --world-size W > 1) recording what the
// features depend on (FeatureFingerprints), the preprocessing, shapes, counts and the finished shards.
// This is the data layer: no model here; the model side computes features and fingerprints (model/iomm_model.h).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include "data/data_source.h"

namespace iomm::data {

inline constexpr const char* kFeatureMember = "features.safetensors";
inline constexpr const char* kFeatureCacheFormat = "iomm-feature-cache";
inline constexpr int kFeatureCacheVersion = 1;

// What cached features depend on. A cache serves a run only when every field is equal.
struct FeatureFingerprints {
  std::string autoencoder;    // autoencoder weights, scale and shift ("identity" in pixel space)
  std::string vision;         // InternViT + mlp1 weights and the tile size
  std::string tokenizer;      // the MLLM's tokenizer files
  std::string text_template;  // the text-condition template (t2i prefix, max_text_tokens, chat template)
  int64_t resolution = 0;     // model.resolution: images are resized and cropped to it before encoding
  std::string dtype;          // the models' compute dtype, which is also the stored dtype

  nlohmann::json to_json() const;
  static FeatureFingerprints from_json(const nlohmann::json& j, const std::string& source);
};

// One sentence per differing field, naming it and both values (empty when the caches match).
std::vector<std::string> fingerprint_differences(const FeatureFingerprints& cache, const FeatureFingerprints& run);

struct FeatureSample {
  std::string key;
  at::Tensor latents;    // [C, h, w]
  at::Tensor c_img;      // [T, D]
  at::Tensor input_ids;  // [L] int64; undefined without a caption
  std::optional<std::string> caption;
};

// The tar members (extension, bytes) of a sample, and back (fails naming the shard and key when malformed).
std::vector<std::pair<std::string, std::string>> feature_members(const FeatureSample& s);
FeatureSample read_feature_sample(const Sample& s);

struct CacheShard {
  std::string name;      // features-NNNNNN.tar, NNNNNN = the input unit's index
  int64_t samples = 0, captions = 0, truncated_captions = 0;
  std::map<std::string, int64_t> skipped;  // by cause
  bool partial = false;  // cut short by --limit: redone when the cache is resumed
  int64_t bad_captions = 0;  // captions that were unusable (not UTF-8, broken .json): the image cached without one
};

struct FeatureManifest {
  FeatureFingerprints fingerprints;
  std::string preprocess;                 // data::kTrainingPreprocess
  std::string latent = "mean";            // the posterior mean (scale·(mean − shift)), never a sample
  double latent_scale = 1, latent_shift = 0;
  std::vector<int64_t> latent_shape, c_img_shape;
  std::string source;                     // the --data spec
  std::string unit;                       // "tar" or "folder:N" (N images per unit)
  int64_t input_units = 0;                // over all ranks
  int64_t rank = 0, world_size = 1;
  int64_t limit = 0;                      // --limit (0 = none)
  bool finished = false;                  // the run ended normally (every assigned unit, or the limit)
  std::vector<CacheShard> shards;         // written so far, in input order
  // Totals over the shards (to_json writes them; from_json recomputes them from the shards).
  int64_t samples = 0, captions = 0, truncated_captions = 0, bad_captions = 0;
  // by cause, as the training stream counts them: undecodable, no_image, bad_member, damaged_shard, missing_file
  std::map<std::string, int64_t> skipped;
  void total();

  nlohmann::json to_json() const;
  static FeatureManifest from_json(const nlohmann::json& j, const std::string& source);
};

// DIR/manifest.json for a single rank, DIR/manifest.rank-R.json with world_size > 1.
std::string manifest_path(const std::string& dir, int64_t rank, int64_t world_size);
void write_manifest(const std::string& dir, const FeatureManifest& m);  // atomic
std::optional<FeatureManifest> read_manifest(const std::string& path);  // nullopt when the file is absent

// Whether a data spec is a feature cache: a directory holding manifest.json or manifest.rank-R.json. Training
// reads such a `data.images` / `data.pairs` as cached features instead of images (docs/data.md).
bool is_feature_cache(const std::string& spec);

// An opened cache: every manifest part read and checked finished and consistent, every listed shard present.
class FeatureCache {
 public:
  static FeatureCache open(const std::string& dir);
  // Fails, naming each differing field and the fix (rebuild with `iomm cache`), unless made for `run`.
  void validate(const FeatureFingerprints& run) const;
  const std::string& dir() const { return dir_; }
  const FeatureFingerprints& fingerprints() const { return parts_.front().fingerprints; }
  const std::vector<FeatureManifest>& parts() const { return parts_; }
  std::vector<std::string> shard_paths() const;  // every rank's shards, in input order
  // The shards as a DataSource (one unit per shard, in input order, samples need their features member), for the
  // streaming loader: a complete cache has the units of its input, so a stream over it orders like one over that.
  DataSource source() const;
  int64_t samples() const;
  SkipCounts build_skips() const;  // what `iomm cache` skipped while building it, by cause (counts only)

 private:
  std::string dir_;
  std::vector<FeatureManifest> parts_;
};

// Iterates the samples of an opened cache, shard by shard in input order.
class FeatureCacheReader {
 public:
  explicit FeatureCacheReader(const FeatureCache& cache);
  ~FeatureCacheReader();
  bool next(FeatureSample& out);

 private:
  std::unique_ptr<WebDatasetReader> reader_;
};

}  // namespace iomm::data
