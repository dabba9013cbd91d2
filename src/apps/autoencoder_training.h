// A learned autoencoder for the tiny world: FLUX's AE architecture (models/autoencoder.h) at a tiny size, trained
// on the unlabelled image-only pool (MSE + a small KL, as a KL-regularised AutoencoderKL), then frozen. Its latent
// scale and shift are measured from the data as FLUX's were (shift = mean of the encoder's means, scale = 1 / their
// standard deviation), so the generator trains on latents of unit variance around 0: without that the prototype of
// 2026-11-22 drifted in colour. The generator then works in latent space, as in the paper, and the convolutional
// decoder draws the edges the pixel-space MM-DiT learns slowly (docs/tiny-world.md, seventh round).
//
//   iomm train --config configs/world/autoencoder.toml --set data.images=POOL --out RUN
// writes RUN/model/ as a diffusers AutoencoderKL directory (config.json with the measured scaling_factor and
// shift_factor, diffusion_pytorch_model.safetensors in diffusers' names): `model.autoencoder = "RUN/model"` loads
// it, and so does diffusers' AutoencoderKL.from_pretrained. RUN/autoencoder_eval.json holds the held-out PSNR.
#pragma once
#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "models/autoencoder.h"
#include "train/trainer.h"

namespace iomm {

class Config;

struct AutoencoderTrainingConfig {
  AutoencoderConfig model;     // [autoencoder]: block_out_channels, layers_per_block, latent_channels, norm_num_groups,
                               // mid_attention
  std::string images;          // data.images: any data spec of load_image_pool (the image-only pool)
  int resolution = 32;         // data.size
  int64_t holdout = 256;       // data.holdout: the pool's last N images, never trained on, score the export
  int64_t batch_size = 32;     // train.batch_size
  double kl_weight = 1e-4;     // train.kl_weight: per-element KL against N(0, 1), beside the per-element MSE
  int64_t stats_samples = 2048;  // train.stats_samples: training images the latent scale and shift are measured on
  LoopConfig loop;             // train.steps, seed, ... and [optim]; defaults: 600 steps, lr 1e-3, EMA off

  static AutoencoderTrainingConfig from_config(Config& cfg);
};

struct LatentStats {
  double shift = 0, scale = 1;
};
// shift = mean of the encoder's means over `images` ([-1, 1]); scale = 1 / their standard deviation around it.
LatentStats measure_latent_stats(FluxAEImpl& model, const at::Tensor& images, int64_t batch_size = 256);

// Mean loss of a batch: MSE(decode(z), x) + kl_weight · KL(q(z|x) || N(0, 1)), both per element, with z drawn by
// the reparameterisation (`gen` draws the noise; undefined: the posterior mean, as at evaluation).
struct AutoencoderLoss {
  at::Tensor total, mse, kl;
};
AutoencoderLoss autoencoder_loss(FluxAEImpl& model, const at::Tensor& images, double kl_weight,
                                 const at::Generator& gen);

// PSNR in dB of decode(encode(x)) against x over `images` (both mapped to [0, 1]), through the scaled latents.
double reconstruction_psnr(FluxAEImpl& model, const at::Tensor& images, int64_t batch_size = 256);

struct AutoencoderTrainingResult {
  bool finished = false;
  std::string model_dir;  // RUN/model when finished
  nlohmann::json eval;    // held-out PSNR, latent scale and shift, the pool's size
  double seconds = 0;
};

AutoencoderTrainingResult train_autoencoder(Config& cfg, const std::string& run_dir, bool resume);

}  // namespace iomm
