// The generator: FLUX's MM-DiT (double-stream then single-stream blocks over a joint [txt; img] sequence,
// adaLN-Zero modulation from a sinusoidal timestep embedding, per-head QK RMSNorm, 3-axis RoPE with adjacent-pair
// rotation). Module names equal Black Forest Labs' original FLUX names (img_in, txt_in, time_in.in_layer,
// double_blocks.N.img_attn.qkv, single_blocks.N.linear1, final_layer.adaLN_modulation.1, ...), so loading a BFL
// checkpoint is load_weights(); diffusers' FluxTransformer2DModel names go through name_conversion.h.
//
// Differences from FLUX, all off by default for FLUX checkpoints: `vector_in` (pooled vector) and `guidance_in`
// are optional, qkv bias is configurable, and a key padding mask over the txt tokens allows variable-length
// conditions (padded txt tokens never influence image tokens).
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <c10/core/TensorOptions.h>
#include <nlohmann/json_fwd.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include "models/components.h"

namespace iomm {

class Config;

// The one set of defaults: IOMM-B (SPEC §1), which from_config falls back to. FLUX.1's own sizes (3072, 24 heads,
// 19 + 38 blocks, 4096-wide T5 context) are the defaults of its file formats only, in from_json.
struct MMDiTConfig {
  int64_t in_channels = 64;        // packed latent token width = latent_channels * patch^2
  int64_t out_channels = 64;
  int64_t hidden_size = 1536;
  int64_t num_heads = 12;
  int64_t depth = 10;              // double-stream blocks
  int64_t depth_single = 20;       // single-stream blocks
  int64_t context_in_dim = 1536;   // txt_in input width (InternVL3-2B's LLM width)
  int64_t vec_in_dim = 0;          // pooled vector width for vector_in; 0 = no vector_in
  double mlp_ratio = 4.0;
  std::vector<int64_t> axes_dim = {16, 56, 56};  // RoPE dims per position axis; sum = head_dim
  double theta = 10000.0;
  bool qkv_bias = true;
  bool guidance_embed = false;
  int64_t patch_size = 2;          // the 2x2 packing of latents into tokens (pack_latents / unpack_latents)

  int64_t head_dim() const { return hidden_size / num_heads; }
  int64_t mlp_hidden() const { return static_cast<int64_t>(static_cast<double>(hidden_size) * mlp_ratio); }
  int64_t latent_channels() const { return in_channels / (patch_size * patch_size); }
  // Fails (naming `source`) when the sizes are inconsistent.
  void validate(const std::string& source) const;

  // From an iomm TOML config: keys under `prefix` (e.g. "model": model.hidden_size, model.depth, ...).
  // `default_context_in_dim` is what an absent context_in_dim resolves to (IOMM passes its MLLM's width, so the
  // resolved config shows the value the model uses).
  static MMDiTConfig from_config(Config& cfg, const std::string& prefix = "model", int64_t default_context_in_dim = 1536);
  // From a diffusers FluxTransformer2DModel config.json or a BFL FluxParams-style JSON (depth, hidden_size, ...).
  static MMDiTConfig from_json(const nlohmann::json& j, const std::string& source);
  // diffusers FluxTransformer2DModel config (fails when the model cannot be expressed there, e.g. theta != 10000).
  nlohmann::json to_diffusers_json(int64_t pooled_projection_dim_if_absent = 768) const;
  // BFL FluxParams as JSON (iomm's own config.json for BFL-named exports).
  nlohmann::json to_bfl_json() const;
  // Infers the sizes from BFL-named tensors (FLUX.1 files come without a config). axes_dim/theta are FLUX's when
  // head_dim is 128 and must otherwise come from a config.
  static MMDiTConfig infer_from_weights(const std::map<std::string, at::Tensor>& bfl, const std::string& source);
};

// Linear layer whose parameters are created with given TensorOptions (so the whole model can be built on the
// "meta" device to count parameters, or directly on a GPU). Parameter names: weight, bias.
struct FluxLinearImpl : torch::nn::Module {
  FluxLinearImpl(int64_t in, int64_t out, bool bias, const c10::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight, bias;
};
TORCH_MODULE(FluxLinear);

// FLUX's RMSNorm: fp32 statistics, cast back, then × scale. Parameter: scale.
struct FluxRMSNormImpl : torch::nn::Module {
  FluxRMSNormImpl(int64_t dim, const c10::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor scale;
};
TORCH_MODULE(FluxRMSNorm);

struct QKNormImpl : torch::nn::Module {
  QKNormImpl(int64_t head_dim, const c10::TensorOptions& opts);
  FluxRMSNorm query_norm{nullptr}, key_norm{nullptr};
};
TORCH_MODULE(QKNorm);

// MLPEmbedder: in_layer -> SiLU -> out_layer.
struct MLPEmbedderImpl : torch::nn::Module {
  MLPEmbedderImpl(int64_t in, int64_t hidden, const c10::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x);
  FluxLinear in_layer{nullptr}, out_layer{nullptr};
};
TORCH_MODULE(MLPEmbedder);

// Modulation: lin(SiLU(vec)) chunked into 3 (single) or 6 (double) vectors [B, 1, D].
struct ModulationImpl : torch::nn::Module {
  ModulationImpl(int64_t dim, bool is_double, const c10::TensorOptions& opts);
  std::vector<at::Tensor> forward(const at::Tensor& vec);  // shift, scale, gate[, shift2, scale2, gate2]
  FluxLinear lin{nullptr};
  int64_t multiplier;
};
TORCH_MODULE(Modulation);

// SelfAttention of one stream in a double block: qkv, norm (QKNorm), proj.
struct FluxSelfAttentionImpl : torch::nn::Module {
  FluxSelfAttentionImpl(int64_t dim, int64_t heads, bool qkv_bias, const c10::TensorOptions& opts);
  FluxLinear qkv{nullptr}, proj{nullptr};
  QKNorm norm{nullptr};
};
TORCH_MODULE(FluxSelfAttention);

// Linear -> GELU(tanh) -> Linear, with BFL's Sequential child names "0" and "2".
struct FluxMLPImpl : torch::nn::Module {
  FluxMLPImpl(int64_t dim, int64_t hidden, const c10::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x);
  FluxLinear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(FluxMLP);

// RoPE tables for a joint sequence: cos/sin [Bp, L, head_dim/2] in fp32 (Bp = 1 or B).
struct RopeTables {
  at::Tensor cos, sin;
};

struct DoubleStreamBlockImpl : torch::nn::Module {
  DoubleStreamBlockImpl(const MMDiTConfig& c, const c10::TensorOptions& opts);
  // img [B,N,D], txt [B,L,D], vec [B,D]; mask [B,1,1,L+N] bool (true = attend) or undefined.
  std::pair<at::Tensor, at::Tensor> forward(const at::Tensor& img, const at::Tensor& txt, const at::Tensor& vec,
                                            const RopeTables& pe, const at::Tensor& mask);
  Modulation img_mod{nullptr}, txt_mod{nullptr};
  FluxSelfAttention img_attn{nullptr}, txt_attn{nullptr};
  FluxMLP img_mlp{nullptr}, txt_mlp{nullptr};
  int64_t heads, head_dim;
};
TORCH_MODULE(DoubleStreamBlock);

struct SingleStreamBlockImpl : torch::nn::Module {
  SingleStreamBlockImpl(const MMDiTConfig& c, const c10::TensorOptions& opts);
  // x [B, L+N, D] = cat(txt, img).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& vec, const RopeTables& pe, const at::Tensor& mask);
  FluxLinear linear1{nullptr}, linear2{nullptr};
  QKNorm norm{nullptr};
  Modulation modulation{nullptr};
  int64_t hidden, mlp_hidden, heads, head_dim;
};
TORCH_MODULE(SingleStreamBlock);

// LastLayer: adaLN_modulation (SiLU, Linear D->2D as (shift, scale)), norm_final (no affine), linear.
struct LastLayerImpl : torch::nn::Module {
  LastLayerImpl(int64_t dim, int64_t out, const c10::TensorOptions& opts);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& vec);
  FluxLinear linear{nullptr}, ada_lin{nullptr};  // ada_lin is registered as adaLN_modulation.1
};
TORCH_MODULE(LastLayer);

struct MMDiTInput {
  at::Tensor img;        // [B, N, in_channels] packed latent tokens
  at::Tensor img_ids;    // [N, A] or [B, N, A] position ids (A = number of RoPE axes)
  at::Tensor txt;        // [B, L, context_in_dim]
  at::Tensor txt_ids;    // [L, A] or [B, L, A]
  at::Tensor timesteps;  // [B] (or scalar) in [0, 1]; 1 = noise. Multiplied by 1000 inside, as FLUX does.
  at::Tensor y;          // [B, vec_in_dim] pooled vector (required iff the model has vector_in)
  at::Tensor guidance;   // [B] guidance scale (required iff guidance_embed)
  at::Tensor txt_mask;   // [B, L] (bool or 0/1): true = real token. Undefined = every token is real.
};

struct MMDiTImpl : torch::nn::Module {
  // `opts` sets the device and dtype the parameters are created with; kMeta builds shapes only (no memory).
  // Parameters are left uninitialised: call init_weights() (training from scratch) or load weights.
  explicit MMDiTImpl(const MMDiTConfig& c, const c10::TensorOptions& opts = {});
  at::Tensor forward(const MMDiTInput& in);  // -> [B, N, out_channels] velocity (noise - data)
  // FLUX's initialisation (torchtitan's): Xavier-uniform linears with zero bias, N(0, 0.02) embedders, unit norm
  // scales, and zero modulation, final adaLN and final linear (adaLN-Zero: the model starts as the zero map).
  void init_weights(uint64_t seed);
  RopeTables rope(const at::Tensor& ids) const;  // ids [L, A] or [B, L, A] -> tables

  MMDiTConfig config;
  int64_t checkpoint_every = 0;  // activation checkpointing of every N-th block (double, then single); 0 = none
  FluxLinear img_in{nullptr}, txt_in{nullptr};
  MLPEmbedder time_in{nullptr}, vector_in{nullptr}, guidance_in{nullptr};
  torch::nn::ModuleList double_blocks{nullptr}, single_blocks{nullptr};
  LastLayer final_layer{nullptr};
};
TORCH_MODULE(MMDiT);

// ---- building blocks, exposed for tests

// FLUX's timestep embedding: t is used as given (callers multiply by 1000), [cos | sin], fp32, dim 256.
at::Tensor flux_timestep_embedding(const at::Tensor& t, int64_t dim = 256, double max_period = 10000.0);
// RoPE tables from position ids [.., L, A]: per axis a, angles pos_a * theta^(-2j/d_a) (computed in float64).
RopeTables flux_rope(const at::Tensor& ids, const std::vector<int64_t>& axes_dim, double theta);
// Rotates adjacent channel pairs of x [B, H, L, Dh] (computed in fp32, returned in x's dtype).
at::Tensor apply_flux_rope(const at::Tensor& x, const RopeTables& pe);
// Joint attention: q,k,v [B, H, L, Dh] -> [B, L, H*Dh]; RoPE applied to q and k; mask [B,1,1,L] bool or undefined.
at::Tensor flux_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const RopeTables& pe,
                          const at::Tensor& mask);
// (1 + scale) * LayerNorm(x) + shift (LayerNorm without affine, eps 1e-6).
at::Tensor modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale);

// ---- latent packing (BFL's "b c (h ph) (w pw) -> b (h w) (c ph pw)")

at::Tensor pack_latents(const at::Tensor& latents, int64_t patch = 2);  // [B,C,H,W] -> [B, H/p*W/p, C*p*p]
at::Tensor unpack_latents(const at::Tensor& tokens, int64_t height, int64_t width, int64_t patch = 2);  // inverse
// Image position ids (0, r, c) for an (H/p) x (W/p) token grid: [H/p*W/p, 3] float.
at::Tensor image_position_ids(int64_t height, int64_t width, int64_t patch = 2, int64_t axes = 3);

// ---- sizes

// Parameter count from the real module classes, built on the meta device (no memory is allocated).
int64_t mmdit_parameter_count(const MMDiTConfig& c);

// ---- loading and export

// Loads from a directory or .safetensors file: diffusers FluxTransformer2DModel (config.json with _class_name, or
// x_embedder.* tensors) or BFL names (config.json in FluxParams form, config.toml with a [model] table, or no
// config at all: sizes inferred from the weights). Parameters are frozen (requires_grad false) when `freeze`.
MMDiT load_mmdit(const std::string& path, const std::string& device = "cpu", const std::string& dtype = "float32",
                 bool freeze = true);
// Writes `model` as a diffusers FluxTransformer2DModel directory (config.json + diffusion_pytorch_model.safetensors)
// or in BFL names (config.json in FluxParams form + model.safetensors). format: "diffusers" or "bfl".
void save_mmdit(const MMDiT& model, const std::string& dir, const std::string& format);

// Checks that `tensors` (diffusers or BFL names; meta tensors are enough: only names and shapes are compared) are
// exactly the parameters of a model with config `c`; fails with the lists of missing, unexpected and mis-shaped
// tensors, naming `source`.
void check_mmdit_checkpoint(const MMDiTConfig& c, const std::map<std::string, at::Tensor>& tensors,
                            const std::string& source);

ForwardComponent mmdit_forward_component();

}  // namespace iomm
