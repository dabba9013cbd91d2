// The condition c that the frozen MLLM reads, as token ids in the Qwen2 chat template (SPEC §1):
//   text:    <|im_start|>user\nGenerate an image: {caption}<|im_end|>\n<|im_start|>assistant\n<img>   (OpenUni)
//   uncond:  the same with "Generate an image."  (the CFG prompt: 10% of training conditions, the negative branch)
//   image:   ...user\n{aux prompt}<img><IMG_CONTEXT>×T</img><|im_end|>...  (self-conditioning, paper §3.2)
//   edit:    ...user\n{instruction}<img><IMG_CONTEXT>×T</img><|im_end|>... (zero-shot editing: the reference
//            image's tokens, unmasked, after the instruction, in the place the aux prompt had in pre-training)
// A batch is right-padded (OpenUni's t2i padding); positions come from the mask, so padding is never seen.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace iomm {

class Config;
class Tokenizer;

enum class ConditionKind { text, uncond, image, edit };
const char* name(ConditionKind k);

struct ConditionInput {
  ConditionInput() = default;
  // {kind, text, image}: what every caller gives; the cached fields below are set by name.
  ConditionInput(ConditionKind k, std::string t = {}, at::Tensor img = {})
      : kind(k), text(std::move(t)), image(std::move(img)) {}

  ConditionKind kind = ConditionKind::text;
  std::string text;  // caption (text) or instruction (edit); unused for image / uncond
  at::Tensor image;  // [3, H, W] in [-1, 1] for image / edit
  // Precomputed by `iomm cache` (data/feature_cache.h), used instead of recomputing: the image's tokens c_img
  // [T, D] before masking (instead of `image`), and this condition's token row [L] int64 as
  // tokenize_condition() gives it (instead of tokenising `text`).
  at::Tensor image_tokens;
  at::Tensor input_ids;
};

struct ConditionTemplates {
  std::string aux_prompt = "Generate an image that is identical to the reference image:";
  std::string t2i_prefix = "Generate an image: ";
  std::string uncond_prompt = "Generate an image.";
  int64_t max_text_tokens = 128;  // longer captions / instructions are truncated (and counted)

  static ConditionTemplates from_config(Config& cfg, const std::string& prefix);
};

struct ConditionTokens {
  at::Tensor input_ids;       // [B, L] int64, right-padded
  at::Tensor attention_mask;  // [B, L] bool, true = real token
  std::vector<int64_t> image_rows;  // batch rows that hold T <IMG_CONTEXT> slots, in order
  int64_t truncated = 0;      // captions cut to max_text_tokens
};

// The user-turn text of one condition (`image_tokens` = T placeholders for image / edit).
std::string condition_prompt(const ConditionInput& in, const ConditionTemplates& t, int64_t image_tokens);

// The token row of one condition (chat template and the trailing "<img>"); `cut` tells whether its text was
// truncated to max_text_tokens. What `iomm cache` stores as input_ids for a caption.
std::vector<int32_t> tokenize_condition(const ConditionInput& in, const ConditionTemplates& t, const Tokenizer& tok,
                                        int64_t image_tokens, bool& cut);

// Tokenises a batch (a condition with input_ids uses them as its row). `pad_id` fills padding (never attended).
ConditionTokens tokenize_conditions(const std::vector<ConditionInput>& inputs, const ConditionTemplates& t,
                                    const Tokenizer& tok, int64_t image_tokens, int64_t pad_id);

}  // namespace iomm
