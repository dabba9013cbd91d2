#include "model/features.h"

#include <torch/torch.h>

#include "conditioning/iomm_conditioner.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/tensor_io.h"
#include "model/iomm_model.h"
#include "models/hf_config.h"
#include "models/weights.h"

namespace iomm {

ImageFeatures encode_image_features(Autoencoder& ae, InternVLImpl& mllm, const at::Tensor& images,
                                    const std::string& device, const std::string& dtype) {
  torch::NoGradGuard no_grad;  // both models are frozen
  ImageFeatures f;
  f.latents = ae.encode(images.to(torch::Device(device), dtype_from_name(dtype)));
  f.c_img = image_condition_tokens(mllm, images);
  return f;
}

data::FeatureFingerprints feature_fingerprints(const Autoencoder& ae, const InternVLImpl& mllm,
                                               const std::string& mllm_dir, const ConditionTemplates& templates,
                                               int64_t resolution, const std::string& dtype) {
  data::FeatureFingerprints f;
  f.autoencoder = ae.fingerprint();
  auto vision = module_tensors(*mllm.vision_model, "vision_model.");
  vision.merge(module_tensors(*mllm.mlp1, "mlp1."));
  f.vision = fmt::format("{} tile {}", fingerprint_tensors(vision), mllm.config.tile_size);
  f.tokenizer = fingerprint_files(mllm_dir, {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                                             "added_tokens.json"});
  // The text row's template: its prefix, the truncation length and the chat template around a probe caption.
  Hasher h;
  h.field(templates.t2i_prefix).field(std::to_string(templates.max_text_tokens));
  h.field(apply_chat_template({{"user", condition_prompt({ConditionKind::text, "{caption}", {}}, templates, 0)}},
                              true));
  f.text_template = "fnv1a64:" + h.hex();
  f.resolution = resolution;
  f.dtype = dtype;
  return f;
}

at::Tensor caption_input_ids(const std::string& caption, const ConditionTemplates& t, const Tokenizer& tok,
                             int64_t image_tokens, bool& cut) {
  auto ids = tokenize_condition({ConditionKind::text, caption, {}}, t, tok, image_tokens, cut);
  return torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong);
}

FeatureEncoder::FeatureEncoder(const IommModelConfig& c)
    : mllm_dir_(c.mllm),
      device_(c.device),
      dtype_(c.frozen_dtype),
      resolution_(c.resolution),
      templates_(c.conditioner.templates),
      mllm_(load_internvl(c.mllm, c.device, c.frozen_dtype, /*lm_head=*/false)),
      tokenizer_(Tokenizer::load(c.mllm)),
      ae_(open_autoencoder(c.autoencoder, c.device, c.frozen_dtype)) {}

ImageFeatures FeatureEncoder::encode(const at::Tensor& images) {
  return encode_image_features(*ae_, *mllm_, images, device_, dtype_);
}

data::FeatureFingerprints FeatureEncoder::fingerprints() const {
  return feature_fingerprints(*ae_, *mllm_, mllm_dir_, templates_, resolution_, dtype_);
}

at::Tensor FeatureEncoder::caption_ids(const std::string& caption, bool& cut) const {
  return caption_input_ids(caption, templates_, tokenizer_, mllm_->config.tokens_per_tile(), cut);
}

TrainingBatch training_batch_from_features(const std::vector<data::FeatureSample>& samples,
                                           const std::vector<ConditionKind>& kinds) {
  if (samples.empty() || samples.size() != kinds.size())
    fail("training_batch_from_features: {} samples but {} condition kinds", samples.size(), kinds.size());
  TrainingBatch b;
  std::vector<at::Tensor> latents;
  for (size_t i = 0; i < samples.size(); ++i) {
    const auto& s = samples[i];
    latents.push_back(s.latents);
    ConditionInput c;
    c.kind = kinds[i];
    if (kinds[i] == ConditionKind::image) {
      c.image_tokens = s.c_img;
    } else if (kinds[i] == ConditionKind::text) {
      if (!s.input_ids.defined())
        fail("cached sample '{}' has no caption (no input_ids), so it cannot be text-conditioned; use pairs with "
             "captions for text conditions",
             s.key);
      c.input_ids = s.input_ids;
      c.text = s.caption.value_or("");
    } else if (kinds[i] != ConditionKind::uncond) {
      fail("training_batch_from_features: sample '{}': a cached sample is an image, text or uncond condition, not {}",
           s.key, name(kinds[i]));
    }
    b.conds.push_back(std::move(c));
  }
  b.latents = torch::stack(latents);
  return b;
}

}  // namespace iomm
