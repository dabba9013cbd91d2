// The frozen half of an IOMM model as a feature source (issue #20): for a batch of images, the autoencoder latents
// and the MLLM's image tokens c_img, which never change during training (centre crops, no augmentation), so
// `iomm cache` computes them once (data/feature_cache.h) and the objective takes them precomputed
// (TrainingBatch::latents, ConditionInput::image_tokens / input_ids) with the same loss.
//
// Latents are scale·(mean − shift) of the FLUX autoencoder's posterior MEAN, as iomm's objective uses (and
// OpenUni's FLUX training: latent_dist.mean): deterministic, so a cached latent equals the one a step computes.
// c_img is taken BEFORE Masked Image Modeling: the mask is drawn per step and stays in the objective.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "conditioning/condition_sequence.h"
#include "data/feature_cache.h"
#include "models/autoencoder.h"
#include "models/internvl.h"
#include "text/tokenizer.h"

namespace iomm {

struct IommModelConfig;
struct TrainingBatch;

struct ImageFeatures {
  at::Tensor latents;  // [B, C, h, w] in the generator's latent space (posterior mean, scaled and shifted)
  at::Tensor c_img;    // [B, T, D] image tokens before masking
};

// The one computation of features; IommModel::loss computes the same from images. `images` [B, 3, R, R] in
// [-1, 1]; latents on `device` in `dtype` (the generator's, as the objective casts images), c_img in the MLLM's.
ImageFeatures encode_image_features(Autoencoder& ae, InternVLImpl& mllm, const at::Tensor& images,
                                    const std::string& device, const std::string& dtype);

// What a cache's features depend on (data::FeatureFingerprints) for these frozen parts.
data::FeatureFingerprints feature_fingerprints(const Autoencoder& ae, const InternVLImpl& mllm,
                                               const std::string& mllm_dir, const ConditionTemplates& templates,
                                               int64_t resolution, const std::string& dtype);

// Only the frozen models of a config (MLLM without LM head, tokenizer, autoencoder): what `iomm cache` loads,
// without building the generator.
class FeatureEncoder {
 public:
  explicit FeatureEncoder(const IommModelConfig& config);
  ImageFeatures encode(const at::Tensor& images);
  data::FeatureFingerprints fingerprints() const;
  // A caption's text-condition token row (int64 [L]); `cut` = truncated to max_text_tokens.
  at::Tensor caption_ids(const std::string& caption, bool& cut) const;
  const Autoencoder& autoencoder() const { return *ae_; }
  int64_t resolution() const { return resolution_; }

 private:
  std::string mllm_dir_, device_, dtype_;
  int64_t resolution_ = 0;
  ConditionTemplates templates_;
  InternVL mllm_{nullptr};
  Tokenizer tokenizer_;
  std::shared_ptr<Autoencoder> ae_;
};

// A caption's text-condition token row, int64 [L] (tokenize_condition for a text condition).
at::Tensor caption_input_ids(const std::string& caption, const ConditionTemplates& t, const Tokenizer& tok,
                             int64_t image_tokens, bool& cut);

// Cached samples as a TrainingBatch (for the trainer's streaming loader): per sample i, kinds[i] is image
// (self-conditioning on its cached c_img, masked by the objective), text (its cached input_ids; the sample must
// have a caption) or uncond; the latents are stacked. The loss equals the loss from the images themselves.
TrainingBatch training_batch_from_features(const std::vector<data::FeatureSample>& samples,
                                           const std::vector<ConditionKind>& kinds);

}  // namespace iomm
