// `iomm cache`: computes the frozen models' features of a training set once (model/features.h) and writes them as
// a feature cache (data/feature_cache.h, docs/data.md).
//
// Work is split into input units: each input .tar is a unit; an image folder is cut into units of
// `folder_unit` images (sorted paths). Unit i becomes shard features-{i:06d}.tar and belongs to rank i % W, so the
// assignment is deterministic. A shard is written atomically (tar renamed on close), then recorded in the rank's
// manifest (also atomic); a killed run, rerun with the same arguments, keeps the recorded shards and continues with
// the next unit, giving the same bytes as an uninterrupted run.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/feature_cache.h"

namespace iomm {

class Config;

struct CacheOptions {
  std::vector<std::string> model;      // model directories (iomm.toml) or TOML configs, merged in order
  std::vector<std::string> overrides;  // --set key=value
  std::string data;                    // WebDataset shard spec or image folder
  std::string out;
  int64_t batch_size = 16;
  int64_t rank = 0, world_size = 1;
  int64_t limit = 0;                   // > 0: stop once this rank's cache holds this many samples
  int64_t folder_unit = 1000;          // images per unit of an image folder
  bool jpeg_draft = false;             // --jpeg-draft: large JPEGs decode at reduced scale (data/image_pool.h)
};

struct CacheResult {
  data::FeatureManifest manifest;
  int64_t new_samples = 0;  // encoded by this call (not kept from an earlier one)
  double seconds = 0;
};

// The model config `iomm cache --model ... --set ...` describes: a model directory's iomm.toml (a run directory's
// model/ too) or TOML files as `iomm train` takes them.
Config cache_model_config(const std::vector<std::string>& model, const std::vector<std::string>& overrides);

CacheResult build_feature_cache(const CacheOptions& o);

// `iomm cache --check`: opens the cache in o.out and validates it against o.model's frozen models (fails naming
// what differs); returns the opened cache's total sample count.
int64_t check_feature_cache(const CacheOptions& o);

}  // namespace iomm
