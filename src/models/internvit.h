// InternViT (the vision tower of InternVL3: InternViT-300M-448px-V2.5): patch conv, CLS token, absolute position
// embeddings (bicubic-interpolated to other grids), pre-norm layers with LayerScale, fused-qkv bidirectional
// attention, exact-GELU MLP, no final norm. Module names equal the ORIGINAL InternVL checkpoint names below
// `vision_model.` (embeddings.class_embedding, encoder.layers.N.attn.qkv, ...); the -hf names are converted in
// name_conversion.h.
#pragma once
#include <string>

#include <nlohmann/json_fwd.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include "models/components.h"

namespace iomm {

struct InternViTConfig {
  int64_t hidden_size = 1024;
  int64_t intermediate_size = 4096;
  int64_t num_hidden_layers = 24;
  int64_t num_attention_heads = 16;
  int64_t num_channels = 3;
  int64_t image_size = 448;  // the grid the position embeddings were trained for (image_size / patch_size)²
  int64_t patch_size = 14;
  bool qkv_bias = true;
  double layer_norm_eps = 1e-6;

  int64_t grid() const { return image_size / patch_size; }
  int64_t head_dim() const { return hidden_size / num_attention_heads; }

  // From the `vision_config` of an InternVL config.json: original keys (InternVisionConfig, model_type
  // intern_vit_6b: qkv_bias, qk_normalization, ...) or -hf keys (InternVLVisionConfig: attention_bias,
  // use_qk_norm, ...), each with its own class defaults for absent keys. Unsupported variants (qk norm, RMSNorm,
  // another activation, a final LayerNorm, no position embeddings) fail naming the field. `source` names the file.
  static InternViTConfig from_json(const nlohmann::json& vision_config, const std::string& source);
};

struct InternViTEmbeddingsImpl : torch::nn::Module {
  explicit InternViTEmbeddingsImpl(const InternViTConfig& c);
  // pixel_values [B,3,H,W] (H, W multiples of the patch size) -> [B, 1 + (H/p)(W/p), C], CLS first.
  at::Tensor forward(const at::Tensor& pixel_values);
  // The position embeddings [1, 1 + gh*gw, C] for a gh×gw patch grid: the stored table at the trained grid,
  // otherwise its patch part bicubic-interpolated (align_corners=false, in fp32) and cast back.
  at::Tensor position_embeddings_for(int64_t gh, int64_t gw);

  InternViTConfig config;
  at::Tensor class_embedding;     // [1,1,C]
  at::Tensor position_embedding;  // [1,1+G²,C]
  torch::nn::Conv2d patch_embedding{nullptr};
};
TORCH_MODULE(InternViTEmbeddings);

struct InternAttentionImpl : torch::nn::Module {
  explicit InternAttentionImpl(const InternViTConfig& c);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Linear qkv{nullptr}, proj{nullptr};  // qkv rows: q, k, v (each C), heads inside each
  int64_t heads, head_dim;
};
TORCH_MODULE(InternAttention);

struct InternMLPImpl : torch::nn::Module {
  explicit InternMLPImpl(const InternViTConfig& c);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(InternMLP);

struct InternViTLayerImpl : torch::nn::Module {
  explicit InternViTLayerImpl(const InternViTConfig& c);
  // h + ls1·attn(norm1(h)), then + ls2·mlp(norm2(·)).
  at::Tensor forward(const at::Tensor& h);
  InternAttention attn{nullptr};
  InternMLP mlp{nullptr};
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  at::Tensor ls1, ls2;  // LayerScale [C]
};
TORCH_MODULE(InternViTLayer);

struct InternViTEncoderImpl : torch::nn::Module {
  explicit InternViTEncoderImpl(const InternViTConfig& c);
  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(InternViTEncoder);

// InternVisionModel: embeddings.*, encoder.layers.N.*.
struct InternViTImpl : torch::nn::Module {
  explicit InternViTImpl(const InternViTConfig& c);
  // pixel_values [B,3,H,W] (cast to the weights' dtype) -> last_hidden_state [B, 1 + (H/p)(W/p), C] (CLS first,
  // the raw last-layer output: no final norm).
  at::Tensor forward(const at::Tensor& pixel_values);

  InternViTConfig config;
  InternViTEmbeddings embeddings{nullptr};
  InternViTEncoder encoder{nullptr};
};
TORCH_MODULE(InternViT);

// Loads the vision tower alone from a directory: an InternVL checkpoint (config.json with `vision_config`, any
// layout of name_conversion.h; the other parts are skipped) or a stand-alone InternViT (config.json is the vision
// config, tensors without prefix). Frozen, in eval mode.
InternViT load_internvit(const std::string& model_dir, const std::string& device = "cpu",
                         const std::string& dtype = "float32");

ForwardComponent internvit_forward_component();

}  // namespace iomm
