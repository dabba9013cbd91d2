// The image autoencoder the generator trains in: FLUX's AE (BFL `src/flux/modules/autoencoder.py`, diffusers'
// AutoencoderKL with the SD3/FLUX config) and a pixel-space identity, behind one small interface so that training
// and sampling code picks either by config (`open_autoencoder`).
//
// FLUX AE: GroupNorm(32, eps 1e-6) + swish ResNet blocks, a single-head attention block in the middle, asymmetric
// (0,1,0,1) zero pad + stride-2 conv downsampling, nearest x2 + conv upsampling; the encoder emits 2·z moments
// (mean | logvar) and iomm uses the mean. Module names equal BFL's `ae.safetensors` names (encoder.down.N.block.M.*,
// encoder.mid.attn_1.q, decoder.up.N.upsample.conv, ...), so loading a BFL file is load_weights(); diffusers'
// AutoencoderKL names go through name_conversion.h. Model latents are scale·(mean − shift) (FLUX: 0.3611, 0.1159).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include "models/components.h"

namespace iomm {

// ---------------------------------------------------------------------------------------------------- interface

struct AutoencoderConfig;

// What training and sampling need from an autoencoder. Images are [B, C, H, W] in [-1, 1]; latents are the
// generator's space (already scaled and shifted).
class Autoencoder {
 public:
  virtual ~Autoencoder() = default;
  virtual at::Tensor encode(const at::Tensor& image) = 0;  // [B,C,H,W] -> [B, latent_channels, H/f, W/f]
  virtual at::Tensor decode(const at::Tensor& latent) = 0;  // inverse (up to the AE's reconstruction error)
  virtual int64_t latent_channels() const = 0;
  virtual int64_t downsample_factor() const = 0;  // f
  virtual std::string describe() const = 0;
  // Changes whenever encode() could: the weights, the latent scale and shift (feature caches check it).
  virtual std::string fingerprint() const = 0;
  // The architecture of a FLUX / AutoencoderKL autoencoder (FLOP counts); null for pixel space.
  virtual const AutoencoderConfig* flux_config() const { return nullptr; }
};

// Pixel space: the latent is the image itself.
class IdentityAutoencoder : public Autoencoder {
 public:
  explicit IdentityAutoencoder(int64_t channels = 3) : channels_(channels) {}
  at::Tensor encode(const at::Tensor& image) override;
  at::Tensor decode(const at::Tensor& latent) override;
  int64_t latent_channels() const override { return channels_; }
  int64_t downsample_factor() const override { return 1; }
  std::string describe() const override;
  std::string fingerprint() const override;

 private:
  int64_t channels_;
};

// ---------------------------------------------------------------------------------------------------- FLUX AE

struct AutoencoderConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  std::vector<int64_t> block_out_channels = {128, 256, 512, 512};  // BFL: ch · ch_mult
  int64_t layers_per_block = 2;   // BFL num_res_blocks (the decoder has one more per level)
  int64_t latent_channels = 16;   // BFL z_channels
  int64_t norm_num_groups = 32;
  double scaling_factor = 0.3611;
  double shift_factor = 0.1159;
  bool use_quant_conv = false;       // SD-style 1x1 convs around the latent (FLUX has none)
  bool use_post_quant_conv = false;
  bool mid_attention = true;

  int64_t downsample_factor() const { return int64_t{1} << (block_out_channels.size() - 1); }
  void validate(const std::string& source) const;
  // From a diffusers AutoencoderKL config.json, or BFL AutoEncoderParams-style JSON (ch, ch_mult, num_res_blocks,
  // z_channels, scale_factor, shift_factor).
  static AutoencoderConfig from_json(const nlohmann::json& j, const std::string& source);
  // From BFL-named tensors (ae.safetensors has no config); scale/shift are FLUX's, so z_channels must be 16.
  static AutoencoderConfig infer_from_weights(const std::map<std::string, at::Tensor>& bfl, const std::string& source);
  nlohmann::json to_diffusers_json() const;
};

struct AEResnetBlockImpl : torch::nn::Module {
  AEResnetBlockImpl(int64_t in, int64_t out, int64_t groups);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, nin_shortcut{nullptr};
};
TORCH_MODULE(AEResnetBlock);

// Single-head self-attention over the H·W positions; q, k, v, proj_out are 1x1 convs (BFL's layout).
struct AEAttnBlockImpl : torch::nn::Module {
  AEAttnBlockImpl(int64_t channels, int64_t groups);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Conv2d q{nullptr}, k{nullptr}, v{nullptr}, proj_out{nullptr};
};
TORCH_MODULE(AEAttnBlock);

// Zero pad (0,1,0,1) then conv3x3 stride 2 (module name `conv`).
struct AEDownsampleImpl : torch::nn::Module {
  explicit AEDownsampleImpl(int64_t channels);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(AEDownsample);

// Nearest x2 then conv3x3 (module name `conv`).
struct AEUpsampleImpl : torch::nn::Module {
  explicit AEUpsampleImpl(int64_t channels);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(AEUpsample);

// One resolution level: `block` (ModuleList of ResNet blocks) and `downsample` or `upsample` (or neither).
struct AELevelImpl : torch::nn::Module {
  AELevelImpl(int64_t in, int64_t out, int64_t blocks, int64_t groups, bool down, bool up);
  torch::nn::ModuleList block{nullptr};
  AEDownsample downsample{nullptr};
  AEUpsample upsample{nullptr};
};
TORCH_MODULE(AELevel);

struct AEMidImpl : torch::nn::Module {
  AEMidImpl(int64_t channels, int64_t groups, bool attention);
  at::Tensor forward(const at::Tensor& x);
  AEResnetBlock block_1{nullptr}, block_2{nullptr};
  AEAttnBlock attn_1{nullptr};
};
TORCH_MODULE(AEMid);

struct AEEncoderImpl : torch::nn::Module {
  explicit AEEncoderImpl(const AutoencoderConfig& c);
  at::Tensor forward(const at::Tensor& x);  // -> moments [B, 2·latent, H/f, W/f]
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down{nullptr};
  AEMid mid{nullptr};
  torch::nn::GroupNorm norm_out{nullptr};
};
TORCH_MODULE(AEEncoder);

struct AEDecoderImpl : torch::nn::Module {
  explicit AEDecoderImpl(const AutoencoderConfig& c);
  at::Tensor forward(const at::Tensor& z);  // raw latent -> image
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  AEMid mid{nullptr};
  torch::nn::ModuleList up{nullptr};  // up.L is level L (L = 0 is the full-resolution level), run from the last
  torch::nn::GroupNorm norm_out{nullptr};
};
TORCH_MODULE(AEDecoder);

struct FluxAEImpl : torch::nn::Module {
  explicit FluxAEImpl(const AutoencoderConfig& c);
  at::Tensor encode_moments(const at::Tensor& x);  // [B, 2·latent, h, w] (after quant_conv when present)
  at::Tensor encode_mean(const at::Tensor& x);     // raw mean (diffusers encode(x).latent_dist.mean)
  at::Tensor decode_raw(const at::Tensor& z);      // diffusers decode(z).sample
  at::Tensor encode_latent(const at::Tensor& x);   // scale · (mean − shift)
  at::Tensor decode_latent(const at::Tensor& z);   // decode_raw(z / scale + shift)
  // diffusers' AutoencoderKL.tiled_decode: square latent tiles of `tile_latent` with stride
  // floor(tile_latent·(1 − overlap)), decoded separately; each tile is linearly blended over
  // floor(tile_latent·f·overlap) pixels into the tile above and the tile to the left, then cropped. Bounded memory
  // for large images; the result differs from decode_raw near the seams (the attention and the convs see one tile).
  at::Tensor decode_raw_tiled(const at::Tensor& z, int64_t tile_latent, double overlap = 0.25);

  AutoencoderConfig config;
  AEEncoder encoder{nullptr};
  AEDecoder decoder{nullptr};
  torch::nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};
};
TORCH_MODULE(FluxAE);

// Loads from a diffusers AutoencoderKL directory (config.json + safetensors), a directory or .safetensors file in
// BFL names (config.json optional: sizes inferred from the weights), e.g. FLUX's ae.safetensors. Parameters are
// frozen when `freeze`. The model is in eval mode on `device` in `dtype`.
FluxAE load_flux_ae(const std::string& path, const std::string& device = "cpu", const std::string& dtype = "float32",
                    bool freeze = true);

class FluxAutoencoder : public Autoencoder {
 public:
  explicit FluxAutoencoder(FluxAE model) : model_(std::move(model)) {}
  at::Tensor encode(const at::Tensor& image) override;  // encode_latent
  at::Tensor decode(const at::Tensor& latent) override;  // decode_latent
  int64_t latent_channels() const override { return model_->config.latent_channels; }
  int64_t downsample_factor() const override { return model_->config.downsample_factor(); }
  std::string describe() const override;
  std::string fingerprint() const override;  // the encoder's weights (not the decoder's), scale and shift
  const AutoencoderConfig* flux_config() const override { return &model_->config; }
  FluxAE& model() { return model_; }
  // Decode latents larger than `tile_latent` (in latent pixels) in tiles (decode_raw_tiled); 0 turns tiling off.
  void set_tiling(int64_t tile_latent, double overlap = 0.25);

 private:
  FluxAE model_;
  int64_t tile_latent_ = 0;
  double overlap_ = 0.25;
};

// `spec` = "identity" (or "pixel") for pixel space, otherwise a path for load_flux_ae. "learned" is the tiny-world
// demo's request to train one first (apps/autoencoder_training.h) and is refused here with that advice.
std::shared_ptr<Autoencoder> open_autoencoder(const std::string& spec, const std::string& device = "cpu",
                                              const std::string& dtype = "float32");

ForwardComponent vae_encode_forward_component();
ForwardComponent vae_decode_forward_component();

}  // namespace iomm
