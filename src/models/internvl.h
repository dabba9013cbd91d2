// InternVL3 (the frozen understanding model of IOMM): InternViT -> drop CLS -> pixel shuffle v2 (downsample 0.5)
// -> mlp1 (LayerNorm eps 1e-5, Linear, exact GELU, Linear) -> image tokens in the LLM's embedding space, spliced
// into the token embeddings at the <IMG_CONTEXT> positions, -> Qwen2 decoder (qwen2.h).
// Module names equal the ORIGINAL InternVL3 checkpoint names: vision_model.*, mlp1.{0,1,3}.*, language_model.*.
#pragma once
#include <string>

#include <nlohmann/json_fwd.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include "models/components.h"
#include "models/internvit.h"
#include "models/qwen2.h"

namespace iomm {

struct InternVLConfig {
  InternViTConfig vision;
  Qwen2Config llm;
  double downsample_ratio = 0.5;     // only 0.5 (pixel shuffle v2 of 2×2 neighbourhoods) is supported
  int64_t image_token_id = 151667;   // <IMG_CONTEXT>
  int64_t tile_size = 448;           // force_image_size (original) or vision image_size: the preprocessing tile

  // Image tokens per tile of tile_size² pixels: (tile/patch)² · ratio² (256 for InternVL3).
  int64_t tokens_per_tile() const;
  // The projector's input width: vision hidden · (1/ratio)².
  int64_t projector_in() const { return vision.hidden_size * 4; }

  // From an InternVL config.json: original (`internvl_chat`: vision_config + llm_config, select_layer, ps_version,
  // force_image_size) or -hf (`internvl`: vision_config + text_config, vision_feature_layer,
  // vision_feature_select_strategy, image_token_id). Fails naming the field for variants iomm does not implement.
  static InternVLConfig from_json(const nlohmann::json& j, const std::string& source);
};

// Pixel shuffle v2 with downsample 0.5: x [N, h, w, C] (h, w even) -> [N, (h/2)(w/2), 4C] with
// out[n, y·(w/2) + x, dy·2C + dx·C + c] = in[n, 2y + dy, 2x + dx, c] (research mllm.md §1.3).
at::Tensor pixel_shuffle_v2(const at::Tensor& x);

struct InternVLOutput {
  at::Tensor last_hidden_state;  // [B,S,D_llm], after the LLM's final norm
  at::Tensor vit_embeds;         // [tiles, tokens per tile, D_llm]: the image tokens (mlp1 output)
  KVCache cache;                 // filled when use_cache
};

struct InternVLImpl : torch::nn::Module {
  InternVLImpl(const InternVLConfig& c, bool with_lm_head);

  // pixel_values [tiles,3,H,W] (ImageNet-normalised; H, W multiples of 2·patch) -> image tokens
  // [tiles, (H/2p)(W/2p), D_llm]: ViT last layer without CLS, pixel shuffle, mlp1.
  at::Tensor image_tokens(const at::Tensor& pixel_values);
  // Token embeddings [B,S,D_llm] (the LLM's embed_tokens).
  at::Tensor embed_tokens(const at::Tensor& input_ids);
  // `embeds` with the rows at input_ids == image_token_id replaced, in order (row-major over [B,S]), by the rows of
  // image_tokens [tiles,T,D] (tiles in order). Fails unless the counts match. Differentiable w.r.t. both.
  at::Tensor splice_image_tokens(const at::Tensor& input_ids, const at::Tensor& embeds,
                                 const at::Tensor& image_tokens) const;
  // The LLM on given embeddings (qwen2.h's forward_embeds: padding mask, positions, KV cache).
  Qwen2Output forward_embeds(const at::Tensor& inputs_embeds, const at::Tensor& attention_mask = {},
                             const at::Tensor& position_ids = {}, const KVCache* past = nullptr,
                             bool use_cache = false);
  // The whole model: embed, splice the image tokens of pixel_values (if defined), run the LLM.
  InternVLOutput forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                         const at::Tensor& pixel_values = {}, const at::Tensor& position_ids = {},
                         bool use_cache = false);

  InternVLConfig config;
  InternViT vision_model{nullptr};
  torch::nn::Sequential mlp1{nullptr};  // 0 LayerNorm(4C, 1e-5), 1 Linear(4C, D), 2 GELU, 3 Linear(D, D)
  Qwen2ForCausalLM language_model{nullptr};
};
TORCH_MODULE(InternVL);

// Loads InternVL3 from a directory (config.json + safetensors, sharded too), original or -hf layout
// (name_conversion.h). The LM head is loaded when the checkpoint has one and `lm_head` is true; IOMM's
// conditioning does not need it. Frozen, in eval mode. Missing, unexpected or mis-shaped tensors fail listing them.
InternVL load_internvl(const std::string& model_dir, const std::string& device = "cpu",
                       const std::string& dtype = "float32", bool lm_head = true);

// The config.json of the ORIGINAL InternVL layout (model_type internvl_chat: vision_config of type intern_vit_6b,
// llm_config of type qwen2, force_image_size, img_context_token_id). from_json reads it back to `c`.
nlohmann::json internvl_config_json(const InternVLConfig& c);
// Writes `model` as an original-layout InternVL checkpoint: DIR/config.json and DIR/model.safetensors (float32,
// names vision_model.*, mlp1.*, language_model.*), so that load_internvl(DIR) reads it like InternVL3-2B.
// The tokenizer is the caller's to put beside it (DIR/tokenizer.json).
void save_internvl(InternVLImpl& model, const std::string& dir);

ForwardComponent internvl_forward_component();

}  // namespace iomm
