// The tiny world's understanding model: the InternVL code of models/internvl.h at a tiny config, pre-trained by
// captioning the shapes world, then frozen — the stand-in for InternVL3-2B (SPEC §3).
//
// One sample: a captioned scene (world::make_captioned on the seed data.seed + data.stream_offset, so the
// model sees many more captioned images than the corpus's small captioned pool), rendered and preprocessed the way
// IOMM conditions at generation time (internvl_condition_pixels: [-1, 1] -> ImageNet normalisation at the tile
// size), inside InternVL3's chat form:
//   <|im_start|>user\n<img><IMG_CONTEXT>×T</img>\nDescribe the image.<|im_end|>\n<|im_start|>assistant\n
//   {caption}<|im_end|>
// with cross entropy on the assistant's tokens (caption + <|im_end|>) only. Micro-batch k = step·grad_accum + micro
// uses stream indices [k·B, (k+1)·B); evaluation uses indices from kEvalFirstIndex on, which training never reaches.
//
// Output: RUN/model/ = config.json (internvl_chat, original layout) + model.safetensors + tokenizer.json, read by
// load_internvl(RUN/model) and Tokenizer::load(RUN/model); RUN/caption_eval.json; RUN/metrics.jsonl.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "models/internvl.h"
#include "train/trainer.h"

namespace iomm {

class Config;
class Tokenizer;

inline constexpr uint64_t kEvalFirstIndex = uint64_t(1) << 40;
inline constexpr int64_t kIgnoreLabel = -100;
inline constexpr const char* kCaptionQuestion = "Describe the image.";

struct UnderstandingConfig {
  InternVLConfig model;         // [mllm], [mllm.vision], [mllm.llm]; vocab and image token from the tokenizer
  std::string tokenizer;        // mllm.tokenizer: a tokenizer.json with <IMG_CONTEXT>, <img>, </img>, <|im_end|>
  int64_t batch_size = 16;
  double init_std = 0.0;        // train.init_std: > 0 runs init_understanding_weights; 0 = libtorch's defaults
  // train.steps, seed (weight init), log_every, checkpoint_every, stop_at, threads, ... and [optim]: the loop's.
  // Defaults: 2000 steps, log every 100, a checkpoint every 1000, 1 torch thread (the renderer takes the other).
  LoopConfig loop = default_loop();
  uint64_t data_seed = 0;       // data.seed: the world's corpus seed
  uint64_t stream_offset = 1000003;  // data.stream_offset: training captions come from data.seed + this
  int image_size = 32;          // data.size: rendered side in px (resized to the tile size by preprocessing)
  int64_t eval_samples = 512, eval_max_new_tokens = 24, eval_examples = 12;

  static LoopConfig default_loop();
  uint64_t stream_seed() const { return data_seed + stream_offset; }
  // Reads every key (with defaults) and loads the tokenizer to size the vocabulary.
  static UnderstandingConfig from_config(Config& cfg);
};

// The user turn and the assistant prefix for captioning one image with `image_tokens` <IMG_CONTEXT> slots.
std::string caption_prompt(int64_t image_tokens);

// Right-padded token ids of caption_prompt + caption + <|im_end|> per caption. labels = the id at the caption and
// <|im_end|> positions, kIgnoreLabel elsewhere (prompt, padding); position t's logits predict labels[t + 1].
struct CaptionBatch {
  at::Tensor input_ids;       // [B, L] int64, padded with <|endoftext|>
  at::Tensor attention_mask;  // [B, L] int64, 1 = token
  at::Tensor labels;          // [B, L] int64
  int64_t prompt_length = 0;  // the same for every row
};
CaptionBatch make_caption_batch(const Tokenizer& tok, const std::vector<std::string>& captions,
                                int64_t image_tokens);

// `n` captioned samples of the stream `seed` from index `first`: images in [-1, 1] [n, 3, size, size].
struct WorldCaptions {
  at::Tensor images;
  std::vector<std::string> captions, tags;
};
WorldCaptions world_captions(uint64_t seed, uint64_t first, int64_t n, int size);

// transformers' initialisation (as in Qwen2's and InternVL's _init_weights): every weight N(0, std), biases 0;
// norms (1, 0) and InternViT's LayerScale (0.1) stay as constructed. Uses torch's global generator.
void init_understanding_weights(InternVLImpl& model, double std);

// Mean cross entropy over the label positions; pixel_values from internvl_condition_pixels.
at::Tensor caption_loss(InternVLImpl& model, const CaptionBatch& batch, const at::Tensor& pixel_values);

// Greedy, KV-cached captions of pixel_values [B, 3, tile, tile]: until <|im_end|> (or <|endoftext|>) or
// max_new_tokens; the text before the stop token.
std::vector<std::string> generate_captions(InternVLImpl& model, const Tokenizer& tok, const at::Tensor& pixel_values,
                                           int64_t max_new_tokens);

// Teacher-forced token accuracy, exact match and content-word scores (apps/caption_metrics.h), overall and per
// tag, plus `examples` reference/generated pairs; batches of `batch_size`.
nlohmann::json evaluate_captions(InternVLImpl& model, const Tokenizer& tok, const WorldCaptions& data,
                                 int64_t max_new_tokens, int64_t examples, int64_t batch_size = 128);

struct UnderstandingResult {
  bool finished = false;   // false when train.stop_at stopped the run (resume it with --resume)
  std::string model_dir;   // RUN/model
  nlohmann::json eval;     // what RUN/caption_eval.json holds
  double train_seconds = 0, total_seconds = 0;
};

// The whole stage on the shared training loop (train/trainer.h): reads the config (then cfg.check_unused()), opens
// RUN (resume continues from the newest complete RUN/checkpoints/step-N), trains, exports RUN/model, evaluates.
UnderstandingResult train_understanding(Config& cfg, const std::string& run_dir, bool resume);

}  // namespace iomm
