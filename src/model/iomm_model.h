// An IOMM model: the conditioner (frozen MLLM + Residual Query Adapter), the MM-DiT generator and the
// autoencoder, with the two things everything else needs from them: the flow-matching loss of a batch (training)
// and the PF-ODE sampler with true CFG (generation and editing). The trainer, `iomm generate`, `iomm edit` and
// the demo all go through this one type.
//
// On disk (`save` / `load`), a model directory holds
//   iomm.toml                 the model config: mllm path, autoencoder, resolution, [generator], [conditioner]
//   generator/                the MM-DiT in BFL names (config.json + model.safetensors), loadable by FLUX tools
//   rqa.safetensors           the adapter (absent in raw mode)
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include "conditioning/iomm_conditioner.h"
#include "diffusion/flow_matching.h"
#include "models/autoencoder.h"
#include "models/mmdit.h"
#include "models/weights.h"

namespace iomm {

class Config;

struct IommModelConfig {
  std::string mllm;                     // InternVL checkpoint directory (config.json, safetensors, tokenizer.json)
  std::string autoencoder = "identity";  // "identity" (pixel space) or a FLUX VAE path
  int64_t resolution = 32;              // training / generation image side
  std::string device = "cpu";
  std::string dtype = "float32";        // generator compute dtype (the MLLM uses it too)
  // What the generator's output means. "velocity" (z − x, FLUX and the paper) or "data" (x itself; the velocity is
  // then (x_t − x̂)/t, and the loss stays the velocity loss). Pixel-space models with large patches learn far
  // faster with "data": the clean image lies on a low-dimensional manifold, the noise does not (Li & He 2025,
  // "Back to Basics: Let Denoising Generative Models Denoise"). The tiny world uses it.
  std::string prediction = "velocity";
  double prediction_t_min = 0.05;       // "data": t is clamped from below in the division
  MMDiTConfig generator;                // [generator]
  ConditionerConfig conditioner;        // [conditioner]

  // [model] mllm, autoencoder, resolution, device, dtype; [generator]; [conditioner]. Needs the MLLM's width
  // (read from its config.json) for the conditioner and the generator's context_in_dim.
  static IommModelConfig from_config(Config& cfg);
};

struct FlowLoss {
  at::Tensor loss;           // scalar: mean over the batch
  at::Tensor per_sample;     // [B] (detached)
};

struct GenerateOptions {
  int64_t steps = 20;
  double cfg_scale = 4.5;          // 1 = no guidance (one NFE per step)
  std::string sampler = "euler";   // euler | dpmpp_2m
  double shift = 1.0;              // static time shift of the schedule (1 = none, as the uniform-t training)
  uint64_t seed = 0;               // image i of a call draws its noise from seed + i ...
  std::vector<uint64_t> seeds;     // ... unless per-image seeds are given (results then independent of batching)
};

class IommModel {
 public:
  // A fresh model: the MLLM and tokenizer loaded (frozen) from config.mllm, generator and adapter initialised
  // from `seed` (adaLN-Zero generator; RQA as in its lineage).
  static IommModel create(const IommModelConfig& config, uint64_t seed);
  // A saved model directory (see above); `device`/`dtype` empty = as saved.
  static IommModel load(const std::string& dir, const std::string& device = "", const std::string& dtype = "");
  void save(const std::string& dir) const;
  // Copies the generator and adapter weights of a saved model directory into this model (stage 2 starting
  // from stage 1); the architecture must match (mismatches are listed).
  void load_weights_from(const std::string& dir);

  // Trainable parameters by checkpoint name: "generator.<BFL name>", "conditioner.rqa.<name>".
  NamedTensors trainable() const;

  // Flow matching (Alg. 1): x = AE(images), x_t = (1−t)x + t·z, loss = ‖v(x_t, t, h) − (z − x)‖². `t` [B] and
  // `noise` (latent-shaped) may be given; otherwise drawn from `gen` with `timesteps`.
  FlowLoss loss(const at::Tensor& images, const Condition& cond, const TimestepSampling& timesteps,
                at::Generator& gen, const at::Tensor& t = {}, const at::Tensor& noise = {});

  // Velocity on packed latent tokens.
  at::Tensor velocity(const at::Tensor& x_tokens, const at::Tensor& t, const Condition& cond);

  // Images [B, 3, R, R] in [-1, 1] for the conditions (true CFG against the unconditional prompt).
  at::Tensor generate(const std::vector<ConditionInput>& conds, const GenerateOptions& o);

  int64_t latent_side() const;
  int64_t image_seq_len() const;

  IommModelConfig config;
  IommConditioner conditioner{nullptr};
  MMDiT generator{nullptr};
  std::shared_ptr<Autoencoder> autoencoder;
};

// cond ; other along the batch, padding the shorter token axis (mask false) so both stack.
Condition concat_conditions(const Condition& a, const Condition& b);

}  // namespace iomm
