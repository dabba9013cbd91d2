// IOMM's generator behind one small interface, so that the model, the trainer and the sampler do not care which
// architecture denoises: FLUX's MM-DiT (IOMM-B / IOMM-L) or Z-Image's single-stream S3-DiT (IOMM-XL, paper §4.1).
//
// Latents travel as FLUX-packed tokens [B, (H/p)(W/p), C·p²] (pack_latents), the layout the flow-matching objective
// and the samplers work in for every architecture; an implementation that wants another layout (Z-Image patchifies
// inside) unpacks. On disk a generator is a directory: config.json + weights in the ecosystem's names (MM-DiT: BFL
// names, loadable by FLUX tools; Z-Image: diffusers ZImageTransformer2DModel names).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "models/detail_head.h"
#include "models/mmdit.h"
#include "models/zimage_dit.h"

namespace torch::nn {
class Module;
}

namespace iomm {

class Config;

struct GeneratorConfig {
  std::string arch = "mmdit";  // mmdit | zimage
  MMDiTConfig mmdit;           // arch = mmdit
  ZImageConfig zimage;         // arch = zimage
  // Width of a convolutional detail head after the MM-DiT (models/detail_head.h); 0 = none, the paper's
  // architecture. A tiny-world option: a DiT on 4x4 pixel patches learns edges slowly without it.
  int64_t detail_head_channels = 0;
  // The MM-DiT's pooled vector (FLUX's vector_in, mmdit.vec_in_dim) is fed the mean of the condition states over
  // their valid tokens when mmdit.vec_in_dim equals the MLLM's width; 0 (the default, the paper's set-up) = none.
  // A tiny-world option: the condition then also reaches every block through adaLN, not only through attention.

  int64_t latent_channels() const;
  int64_t patch_size() const;
  int64_t context_dim() const;  // the width of h it reads (the MLLM's)
  // Keys under `prefix` (generator.arch, then the architecture's keys). `context_dim` = the MLLM's width, the
  // default of context_in_dim / cap_feat_dim; a different explicit value is an error.
  static GeneratorConfig from_config(Config& cfg, const std::string& prefix, int64_t context_dim);
};

class Generator {
 public:
  virtual ~Generator() = default;
  // The network's raw output on packed tokens x [B, N, C·p²] at t [B] (1 = noise), conditioned on h [B, L, D] with
  // h_mask [B, L] (true = token): FLUX's velocity convention (z − x), whatever the architecture's own.
  virtual at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& h, const at::Tensor& h_mask,
                             int64_t latent_h, int64_t latent_w) = 0;
  virtual torch::nn::Module& module() = 0;
  virtual const torch::nn::Module& module() const = 0;
  virtual void init_weights(uint64_t seed) = 0;  // adaLN-Zero: a fresh generator is the zero map
  // Activation checkpointing of every `every`-th block while training (0 = none; models/activation_checkpoint.h).
  virtual void set_activation_checkpointing(int64_t every) = 0;
  virtual void save(const std::string& dir) const = 0;
  // Copies the weights of a directory written by save() (or the ecosystem's layout) into this generator; the
  // architecture must match (mismatches are listed).
  virtual void load_weights(const std::string& dir) = 0;

  const GeneratorConfig& config() const { return config_; }

 protected:
  explicit Generator(GeneratorConfig c) : config_(std::move(c)) {}
  GeneratorConfig config_;
};

// The mean of h [B, L, D] over the tokens h_mask [B, L] marks (all when undefined) -> [B, D]; a row without a
// valid token gives zeros. What a generator with a pooled vector (GeneratorConfig's vec_in_dim) reads.
at::Tensor pooled_condition(const at::Tensor& h, const at::Tensor& h_mask);

// A generator of `config`'s architecture with uninitialised parameters on `device` in `dtype`.
std::unique_ptr<Generator> make_generator(const GeneratorConfig& config, const std::string& device,
                                          const std::string& dtype);

}  // namespace iomm
