// Training images held in memory as uint8 [N, 3, R, R]: decoded once from WebDataset shards or an image folder,
// shorter side resized to R and centre-cropped (the paper's 512² recipe, App. B.1), with captions when present.
// This serves the tiny world and small fine-tuning sets (210K images at 512² would need 165 GB, so real-scale
// pre-training needs a streaming loader over the same Sample interface; see docs/training.md).
// Nothing is dropped silently: undecodable samples, samples without a caption where one is required, and members
// the reader skipped are counted and reported.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "data/data_source.h"

namespace iomm::data {

struct Sample;

struct PoolStats {
  int64_t loaded = 0;
  SkipCounts skipped;  // by cause (data/data_source.h), the first example of each
  std::string summary() const;
};

struct ImagePool {
  at::Tensor images;                  // uint8 [N, 3, R, R]
  std::vector<std::string> captions;  // empty, or one per image
  std::vector<std::string> keys;
  PoolStats stats;
  int64_t size() const { return images.defined() ? images.size(0) : 0; }
  // Images `idx` as float [-1, 1].
  at::Tensor batch(const std::vector<int64_t>& idx) const;
};

// How every training image is prepared (load_image_pool, iomm cache): decoded (EXIF orientation applied), RGB,
// shorter side resized to R (bicubic, Pillow-compatible), centre crop R×R, rounded to uint8.
inline constexpr const char* kTrainingPreprocess =
    "decode (EXIF orientation), RGB, shorter side resize to R (bicubic, Pillow-compatible), centre crop RxR, uint8";
// The same with a JPEG at least twice R decoded at reduced scale first (image.h, decode_image_bytes): data.jpeg_draft.
inline constexpr const char* kTrainingPreprocessJpegDraft =
    "decode (EXIF orientation; JPEG DCT-domain downscale by 2/4/8 keeping the shorter side >= R), RGB, shorter side "
    "resize to R (bicubic, Pillow-compatible), centre crop RxR, uint8";
// The sample's image prepared as above: uint8 [3, R, R]. Throws iomm::Error when it does not decode.
at::Tensor training_image(const Sample& s, int resolution, bool jpeg_draft = false);
// uint8 images -> float in [-1, 1], the models' input range.
at::Tensor to_model_range(const at::Tensor& images_u8);

// `spec`: any data spec of DataSource::open (shards, a brace range, a .txt shard list, an image folder, a .jsonl
// index), read in order with the streaming loader's preprocessing (prepare_sample) and skip causes.
// `require_captions`: samples without one are skipped and counted. `limit` > 0 stops after that many images.
ImagePool load_image_pool(const std::string& spec, int resolution, bool require_captions, int64_t limit = 0,
                          bool progress = true);

}  // namespace iomm::data
