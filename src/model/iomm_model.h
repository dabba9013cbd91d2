// An IOMM model: the conditioner (frozen MLLM + Residual Query Adapter), the generator (MM-DiT or Z-Image, behind
// model/generator.h) and the autoencoder, with the two things everything else needs from them: the training
// objective (model/objective.cpp, paper Alg. 1) and the PF-ODE sampler with true CFG (model/sampling.cpp). The
// trainer, `iomm generate`, `iomm edit` and the demo all go through this one type; its parts stay private.
//
// On disk (`save` / `load`), a model directory holds
//   iomm.toml                 the resolved [model], [generator], [conditioner] tables; paths relative to the directory
//   generator/                the generator (MM-DiT in BFL names, loadable by FLUX tools; Z-Image in diffusers names)
//   rqa.safetensors           the adapter (absent in raw mode)
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include "conditioning/iomm_conditioner.h"
#include "data/feature_cache.h"
#include "diffusion/flow_matching.h"
#include "model/features.h"
#include "model/generator.h"
#include "models/autoencoder.h"
#include "models/hf_config.h"  // dtype_from_name
#include "models/weights.h"

namespace iomm {

class Config;

struct IommModelConfig {
  std::string mllm;                     // InternVL checkpoint directory (config.json, safetensors, tokenizer.json)
  std::string autoencoder = "identity";  // "identity" (pixel space) or a FLUX VAE path
  int64_t resolution = 32;              // training / generation image side
  std::string device = "cpu";
  std::string dtype = "float32";        // the generator's and the adapter's dtype (fp32 master weights under autocast)
  // The frozen MLLM's and autoencoder's dtype (model.frozen_dtype; default: model.dtype). The paper's set-up is
  // fp32 masters with bf16 autocast and the frozen models held in bf16 (half their memory); their outputs are
  // cast to `dtype` where they enter the trained parts.
  std::string frozen_dtype = "float32";
  // What the generator's output means. "velocity" (z − x, FLUX and the paper) or "data" (x itself; the velocity is
  // then (x_t − x̂)/t, and the loss stays the velocity loss). Pixel-space models with large patches learn far
  // faster with "data": the clean image lies on a low-dimensional manifold, the noise does not (Li & He 2025,
  // "Back to Basics: Let Denoising Generative Models Denoise"). The tiny world uses it.
  std::string prediction = "velocity";
  double prediction_t_min = 0.05;       // "data": t is clamped from below in the division
  GeneratorConfig generator;            // [generator]
  ConditionerConfig conditioner;        // [conditioner]
  std::string resolved_toml;            // the [model], [generator], [conditioner] tables as read (iomm.toml)

  // [model] mllm, autoencoder, resolution, device, dtype, frozen_dtype, prediction; [generator]; [conditioner]. Needs the MLLM's
  // width (read from its config.json) for the conditioner and the generator's context width.
  static IommModelConfig from_config(Config& cfg);
};

// One training batch. keep / t / noise are normally drawn from the step's generator; given, they make the
// objective checkable against a reference (the golden test).
struct TrainingBatch {
  at::Tensor images;                  // [B, 3, R, R] in [-1, 1]; unused when `latents` is given
  std::vector<ConditionInput> conds;  // per sample: image (self-conditioning, masked), text, uncond or edit
  at::Tensor keep;                    // optional MIM keep-mask (IommConditionerImpl::forward)
  at::Tensor t;                       // optional [B]
  at::Tensor noise;                   // optional, packed-latent shaped [B, N, C·p²]
  at::Tensor latents;                 // optional [B, C, h, w]: precomputed (iomm cache, model/features.h)
};

// One sample's share of the objective's randomness (IommModel::draw_sample_noise): its MIM keep-mask row
// (undefined unless masked), its timestep [1] and its noise [1, N, C·p²].
struct SampleNoise {
  at::Tensor keep, t, noise;
};
// Stacks per-sample draws into `batch` (keep only over the masked samples, in batch order, as the conditioner
// takes it).
void set_batch_noise(TrainingBatch& batch, const std::vector<SampleNoise>& draws);

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

// Fails naming the option when `o` cannot give an image (before any model work): a non-finite guidance scale
// (--cfg nan used to write a black PNG), a time shift that is not a finite number > 0, fewer than 1 step.
void check_generate_options(const GenerateOptions& o);

// Called after every sampler step with packed latents (x and the x0 estimate); decode_preview() turns them into
// images for progress previews.
using GenerateCallback = StepCallback;

class IommModel {
 public:
  // A fresh model: the MLLM and tokenizer loaded (frozen) from config.mllm, generator and adapter initialised
  // from `seed` (adaLN-Zero generator; RQA as in its lineage).
  static IommModel create(const IommModelConfig& config, uint64_t seed);
  // A saved model directory (see above), frozen and in eval mode; `device`/`dtype` empty = as saved (a `dtype`
  // given applies to the frozen models too).
  static IommModel load(const std::string& dir, const std::string& device = "", const std::string& dtype = "");
  void save(const std::string& dir) const;
  // Copies the generator and adapter weights of a saved model directory into this model (stage 2 starting
  // from stage 1); the architecture must match (mismatches are listed).
  void load_weights_from(const std::string& dir);

  // Trainable parameters by checkpoint name: "generator.<name>", "conditioner.rqa.<name>".
  NamedTensors trainable() const;
  // Makes the generator and adapter trainable again after load() froze them (fine-tuning a saved model, tests).
  void unfreeze();
  void set_training(bool on);  // the generator's train/eval mode; the frozen MLLM always stays in eval
  // Recompute every `every`-th generator block in backward instead of keeping its activations (0 = off): less
  // memory for one more forward of those blocks; gradients are unchanged.
  void set_activation_checkpointing(int64_t every);

  // The training objective (paper Alg. 1): condition with MIM on image conditions, x = AE(images) (or the
  // batch's precomputed latents), x_t = (1−t)x + t·z, loss = ‖v(x_t, t, h) − (z − x)‖². Draws from `gen`: masks,
  // then t, then z — the same draws with images or with cached features.
  FlowLoss loss(const TrainingBatch& batch, const TimestepSampling& timesteps, at::Generator& gen);
  // One sample's draws of what loss() would otherwise draw for the batch: the keep-mask row when `masked` (a
  // self-conditioned sample and conditioner.mask_ratio > 0), then t, then z. The trainer draws each sample from its
  // own generator, so a global batch split across ranks or micro-batches draws what one process would.
  SampleNoise draw_sample_noise(bool masked, const TimestepSampling& timesteps, at::Generator& gen) const;

  // What the frozen models make of images [B, 3, R, R] in [-1, 1]: the latents and c_img (before masking) that
  // loss() computes from them; `iomm cache` stores these (model/features.h).
  ImageFeatures encode_features(const at::Tensor& images);
  // What cached features must have been made with to serve this model; FeatureCache::validate checks them.
  data::FeatureFingerprints feature_fingerprints() const;

  // The generator's condition h for `conds`: inference by default; `mim` masks image conditions as training does
  // (masks from `gen`, or the given `keep`; see IommConditionerImpl::forward).
  Condition condition(const std::vector<ConditionInput>& conds, bool mim = false, at::Generator* gen = nullptr,
                      const at::Tensor& keep = {});
  // Velocity on packed latent tokens.
  at::Tensor velocity(const at::Tensor& x_tokens, const at::Tensor& t, const Condition& cond);
  // Images [B, 3, R, R] in [-1, 1] for the conditions (true CFG against the unconditional prompt).
  at::Tensor generate(const std::vector<ConditionInput>& conds, const GenerateOptions& o,
                      const GenerateCallback& on_step = nullptr);
  // Packed latents (a sampler step's x or x0 estimate) -> images [B, 3, R, R] in [0, 1].
  at::Tensor decode_preview(const at::Tensor& tokens);

  const IommModelConfig& config() const { return config_; }
  const IommConditionerImpl& conditioner() const { return *conditioner_; }  // read-only: tokenizer, templates
  const Autoencoder& autoencoder() const { return *autoencoder_; }
  int64_t latent_side() const;
  int64_t image_seq_len() const;
  int64_t generator_parameters() const;
  int64_t adapter_parameters() const;
  int64_t truncated_captions() const;  // captions cut to conditioner.max_text_tokens so far

 private:
  IommModelConfig config_;
  IommConditioner conditioner_{nullptr};
  std::unique_ptr<Generator> generator_;
  std::shared_ptr<Autoencoder> autoencoder_;

  c10::ScalarType frozen_dtype() const { return dtype_from_name(config_.frozen_dtype); }
};

// cond ; other along the batch, padding the shorter token axis (mask false) so both stack.
Condition concat_conditions(const Condition& a, const Condition& b);

}  // namespace iomm
