// IOMM-XL's generator: Z-Image's single-stream S3-DiT (research/backbone.md §4), matching diffusers'
// ZImageTransformer2DModel (basic mode: one image per sample, no SigLIP/omni inputs) operation for operation.
// Module names equal diffusers' (all_x_embedder.2-1, noise_refiner.N, context_refiner.N, layers.N.attention.to_q,
// layers.N.feed_forward.w1, layers.N.adaLN_modulation.0, all_final_layer.2-1.adaLN_modulation.1, t_embedder.mlp.0,
// cap_embedder.0/1, x_pad_token, cap_pad_token), so loading a diffusers checkpoint is load_weights().
//
// Pipeline: patchify (channel-last: feature (pf·pH·pW)·C + c) -> all_x_embedder -> x_pad_token up to a multiple
// of 32 -> noise_refiner (modulated) ; cap_embedder (RMSNorm, Linear) -> cap_pad_token up to a multiple of 32 ->
// context_refiner (unmodulated) ; unified [image; caption] -> layers (modulated) -> final layer -> unpatchify.
// Blocks: sandwich RMSNorm, SwiGLU FFN, per-head RMSNorm on q/k, RoPE on adjacent pairs (theta 256, axes
// 32/48/48), modulation Linear(256 -> 4D) on the timestep embedding giving (scale, gate) × 2, x·(1+scale),
// tanh(gate). Position ids: caption token k -> (1+k, 0, 0) (pad tokens included), image token -> (Lcap_pad+1+f, h, w),
// image pad tokens -> (0, 0, 0).
//
// Time convention (the reference's): timestep t = 1 - sigma (0 = noise), scaled by t_scale (1000) inside; the output
// is the NEGATIVE of iomm's flow-matching velocity (noise - data). zimage_velocity() converts both ways.
#pragma once
#include <map>
#include <string>
#include <vector>

#include <c10/core/TensorOptions.h>
#include <nlohmann/json_fwd.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include "models/components.h"
#include "models/mmdit.h"

namespace iomm {

class Config;

struct ZImageConfig {
  int64_t in_channels = 16;         // latent channels (FLUX VAE)
  int64_t patch_size = 2;
  int64_t f_patch_size = 1;
  int64_t dim = 3840;
  int64_t n_layers = 30;
  int64_t n_refiner_layers = 2;     // noise_refiner and context_refiner each
  int64_t n_heads = 30;
  int64_t n_kv_heads = 30;          // kept for config round trips; diffusers (and iomm) use n_heads for k/v too
  double norm_eps = 1e-5;
  bool qk_norm = true;
  int64_t cap_feat_dim = 2560;      // condition width (1536 for InternVL3-2B's Qwen2.5-1.5B)
  double rope_theta = 256.0;
  double t_scale = 1000.0;
  std::vector<int64_t> axes_dims = {32, 48, 48};
  std::vector<int64_t> axes_lens = {1024, 512, 512};

  static constexpr int64_t kSeqMultipleOf = 32;
  static constexpr int64_t kAdaLNEmbedDim = 256;
  static constexpr int64_t kTimeMidDim = 1024;

  int64_t head_dim() const { return dim / n_heads; }
  int64_t ffn_hidden() const { return static_cast<int64_t>(static_cast<double>(dim) / 3.0 * 8.0); }  // int(dim/3*8)
  int64_t adaln_dim() const { return dim < kAdaLNEmbedDim ? dim : kAdaLNEmbedDim; }
  int64_t patch_dim() const { return f_patch_size * patch_size * patch_size * in_channels; }
  std::string patch_key() const { return std::to_string(patch_size) + "-" + std::to_string(f_patch_size); }
  void validate(const std::string& source) const;

  // From an iomm TOML config: keys under `prefix` (generator.arch = "zimage", generator.dim, generator.n_layers, ...).
  // `default_cap_feat_dim` (> 0) replaces the struct's default (IOMM passes its MLLM's width).
  static ZImageConfig from_config(Config& cfg, const std::string& prefix = "generator",
                                  int64_t default_cap_feat_dim = 0);
  // From a diffusers ZImageTransformer2DModel config.json.
  static ZImageConfig from_json(const nlohmann::json& j, const std::string& source);
  nlohmann::json to_diffusers_json() const;
};

// Linear with diffusers' names (weight, bias): reuses FluxLinear.
// RMSNorm as diffusers' RMSNorm: fp32 statistics, eps configurable, parameter `weight`.
struct ZImageRMSNormImpl : torch::nn::Module {
  ZImageRMSNormImpl(int64_t dim, double eps, const c10::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;
  double eps;
};
TORCH_MODULE(ZImageRMSNorm);

// Attention: to_q, to_k, to_v, to_out.0 (bias-free), norm_q / norm_k (per-head RMSNorm, eps 1e-5).
struct ZImageAttentionImpl : torch::nn::Module {
  ZImageAttentionImpl(const ZImageConfig& c, const c10::TensorOptions& opts);
  // x [B, L, D]; pe tables [Bp, L, head_dim/2]; mask [B,1,1,L] bool (true = attend) or undefined.
  at::Tensor forward(const at::Tensor& x, const RopeTables& pe, const at::Tensor& mask);
  FluxLinear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, to_out0{nullptr};
  ZImageRMSNorm norm_q{nullptr}, norm_k{nullptr};
  int64_t heads, head_dim;
};
TORCH_MODULE(ZImageAttention);

// SwiGLU: w2(silu(w1 x) * w3 x), bias-free.
struct ZImageFeedForwardImpl : torch::nn::Module {
  ZImageFeedForwardImpl(int64_t dim, int64_t hidden, const c10::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x);
  FluxLinear w1{nullptr}, w2{nullptr}, w3{nullptr};
};
TORCH_MODULE(ZImageFeedForward);

struct ZImageBlockImpl : torch::nn::Module {
  ZImageBlockImpl(const ZImageConfig& c, bool modulation, const c10::TensorOptions& opts);
  // x [B, L, D]; adaln [B, 256] (required iff modulated).
  at::Tensor forward(const at::Tensor& x, const RopeTables& pe, const at::Tensor& mask, const at::Tensor& adaln);
  ZImageAttention attention{nullptr};
  ZImageFeedForward feed_forward{nullptr};
  ZImageRMSNorm attention_norm1{nullptr}, attention_norm2{nullptr}, ffn_norm1{nullptr}, ffn_norm2{nullptr};
  FluxLinear ada{nullptr};  // registered as adaLN_modulation.0 when modulated
  bool modulation;
};
TORCH_MODULE(ZImageBlock);

// FinalLayer: LayerNorm (no affine, eps 1e-6) × (1 + adaLN_modulation.1(SiLU(c))), then linear.
struct ZImageFinalLayerImpl : torch::nn::Module {
  ZImageFinalLayerImpl(int64_t dim, int64_t adaln_dim, int64_t out, const c10::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& c);
  FluxLinear linear{nullptr}, ada{nullptr};
};
TORCH_MODULE(ZImageFinalLayer);

struct ZImageInput {
  at::Tensor x;          // [B, C, H, W] or [B, C, F, H, W] latents (the reference's list, stacked)
  at::Tensor t;          // [B] (or scalar): 1 - sigma, 0 = noise; multiplied by t_scale inside
  at::Tensor cap_feats;  // [B, L, cap_feat_dim]
  at::Tensor cap_mask;   // [B, L] (bool or 0/1): true = real token; undefined = every token is real. At least one
                         // real token per sample; the real tokens keep their order (they need not be a prefix).
};

struct ZImageDiTImpl : torch::nn::Module {
  // `opts` sets device and dtype; kMeta builds shapes only. Parameters are uninitialised: init_weights() or load.
  explicit ZImageDiTImpl(const ZImageConfig& c, const c10::TensorOptions& opts = {});
  // -> x's shape: the reference's output (the negative of the velocity noise - data).
  at::Tensor forward(const ZImageInput& in);
  // iomm's initialisation (diffusers defines none): Xavier-uniform linears, zero biases, unit norms, N(0, 0.02)
  // pad tokens and timestep MLP, and zero adaLN modulations and final linear, so the model starts as the zero map
  // with identity-gated modulated blocks.
  void init_weights(uint64_t seed);

  ZImageConfig config;
  int64_t checkpoint_every = 0;  // activation checkpointing of every N-th block (refiners, then layers); 0 = none
  ZImageFinalLayer final_layer{nullptr};     // all_final_layer.<patch_key>
  FluxLinear x_embed{nullptr};                // all_x_embedder.<patch_key>
  torch::nn::ModuleList noise_refiner{nullptr}, context_refiner{nullptr}, layers{nullptr};
  FluxLinear t_mlp0{nullptr}, t_mlp2{nullptr};  // t_embedder.mlp.0 / .2
  ZImageRMSNorm cap_norm{nullptr};              // cap_embedder.0
  FluxLinear cap_linear{nullptr};               // cap_embedder.1
  at::Tensor x_pad_token, cap_pad_token;        // [1, D]
};
TORCH_MODULE(ZImageDiT);

// iomm's flow-matching convention: t_iomm in [0, 1] with 1 = noise, returns the velocity (noise - data) =
// -forward(x, 1 - t_iomm).
at::Tensor zimage_velocity(ZImageDiT& model, const at::Tensor& x, const at::Tensor& t_iomm, const at::Tensor& cap_feats,
                           const at::Tensor& cap_mask = {});

// RoPE tables for Z-Image position ids [.., L, A] (angles in float64 rounded to fp32, as the reference does).
RopeTables zimage_rope(const at::Tensor& ids, const ZImageConfig& c);

// Parameter count from the real module classes on the meta device.
int64_t zimage_parameter_count(const ZImageConfig& c);

// Loads a diffusers ZImageTransformer2DModel directory (config.json + safetensors) or an iomm directory with a
// config.toml [generator] table. Tensors in the original Z-Image names are converted (name_conversion.h).
ZImageDiT load_zimage(const std::string& path, const std::string& device = "cpu", const std::string& dtype = "float32",
                      bool freeze = true);

ForwardComponent zimage_forward_component();

}  // namespace iomm
