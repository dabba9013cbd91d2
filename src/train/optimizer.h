// The optimisation recipe of IOMM (paper App. B): AdamW (betas, eps, weight decay), global grad-norm clipping,
// LR warm-up then a constant / cosine / linear schedule, and an EMA of the trainable weights. For IOMM-XL the paper
// uses Muon: Newton–Schulz-orthogonalised Nesterov momentum on the 2-D hidden weights (Keller Jordan's public
// reference, MuonWithAuxAdam), AdamW for the rest (embedders, final layer, biases, norms, learned queries).
// Parameters are named (module names), so optimizer and EMA state are saved as plain named tensors and resume
// restores them exactly (bit-exact on CPU).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "models/weights.h"  // NamedTensors

namespace torch::nn {
class Module;
}

namespace iomm {

class Config;

struct OptimConfig {
  double lr = 1e-4;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.0;
  double grad_clip = 1.0;           // max global L2 norm; 0 = no clipping
  int64_t warmup_steps = 0;         // linear from lr/warmup to lr
  std::string schedule = "constant";  // constant | cosine | linear (after warm-up, down to min_lr_ratio·lr)
  double min_lr_ratio = 0.0;
  int64_t total_steps = 0;          // the horizon of cosine / linear decay
  std::string name = "adamw";       // adamw | muon (Muon on hidden matrices, AdamW on the rest)
  double muon_lr = 0.02;            // Muon's LR at optim.lr (the schedule scales both alike)
  double muon_momentum = 0.95;
  bool muon_nesterov = true;
  int64_t muon_ns_steps = 5;        // Newton–Schulz iterations

  // Keys under `prefix` (lr, betas, eps, weight_decay, grad_clip, warmup_steps, schedule, min_lr_ratio, name,
  // muon_lr, muon_momentum, muon_nesterov, muon_ns_steps);
  // total_steps is the caller's (the stage's step count).
  static OptimConfig from_config(Config& cfg, const std::string& prefix, int64_t total_steps);
};

// The learning rate of optimizer step `step` (0-based).
double lr_at(const OptimConfig& c, int64_t step);

// Global L2 norm of the gradients of `params` (params without grad are skipped). Scales them in place to
// `max_norm` when larger and max_norm > 0. Returns the norm before clipping (non-finite when a grad is).
double clip_grad_norm(const NamedTensors& params, double max_norm);

// The orthogonalised update of Muon: Newton–Schulz quintic iteration (coefficients 3.4445, −4.7750, 2.0315) on G
// scaled to unit Frobenius norm, run on the wide orientation; `steps` iterations.
at::Tensor newton_schulz5(const at::Tensor& g, int64_t steps);
// Whether `name` is a hidden weight matrix that Muon updates: 2-D and inside the transformer blocks or the adapter,
// not an embedder, the final layer, the learned queries or a pad token.
bool is_muon_parameter(const std::string& name, const at::Tensor& p);

// AdamW (or Muon + AdamW, optim.name) over named parameters.
class Optimizer {
 public:
  Optimizer(NamedTensors params, OptimConfig cfg);
  ~Optimizer();
  // Clips, sets the LR of `step`, steps and zeroes the grads. Returns the grad norm before clipping.
  // A non-finite norm skips the update (the grads are zeroed) so one bad batch cannot destroy the weights.
  double step(int64_t step);
  void zero_grad();
  // Skipped steps of this process: in all, and in a row up to the last step (0 after an applied one).
  int64_t skipped() const { return skipped_; }
  int64_t skipped_in_a_row() const { return skipped_in_a_row_; }
  // Fails once `limit` steps in a row were skipped: the weights have not changed since, so the run is spending its
  // budget on nothing. `what` names the run (stage), `kept` where its last saved state is.
  void fail_if_stuck(int64_t limit, const std::string& what, int64_t step, const std::string& kept) const;
  const OptimConfig& config() const { return cfg_; }
  // ZeRO-1: this process updates and keeps state for the parameters with owned[i] only; the grad norm (clipping,
  // the non-finite skip) still covers all of them, so every rank takes the same decision.
  void shard(const std::vector<bool>& owned);
  // Parameter i's state entries by name (zeros of the right shapes where this process does not own it): what a
  // ZeRO-1 checkpoint gathers from the owners.
  std::vector<std::pair<std::string, at::Tensor>> state_of(size_t i) const;
  // "NAME.exp_avg", "NAME.exp_avg_sq", "NAME.step" for every AdamW parameter, "NAME.momentum_buffer" for Muon's.
  std::map<std::string, at::Tensor> state() const;
  // Restores state() (the owned parameters' entries); fails naming the first missing or mis-shaped entry.
  void load_state(const std::map<std::string, at::Tensor>& state, const std::string& source);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  void muon_step(double lr);
  NamedTensors params_;
  OptimConfig cfg_;
  int64_t skipped_ = 0, skipped_in_a_row_ = 0;
};

// Exponential moving average of named parameters: ema ← decay·ema + (1 − decay)·param, in fp32. `on_cpu` keeps the
// average in host memory (train.ema_device = "cpu"): 4 bytes per parameter off the GPU (IOMM-XL: 22.9 GiB), for a
// device-to-host copy of the weights per update.
class Ema {
 public:
  Ema(const NamedTensors& params, double decay, bool on_cpu = false);
  void update(const NamedTensors& params) { update(params, decay_); }
  void update(const NamedTensors& params, double decay);
  // The decay of update number `n` (0-based) with warm-up: min(decay, (1 + n) / (10 + n)), so early weights are
  // not frozen into the average (the common EMA warm-up of timm / diffusers).
  double warmup_decay(int64_t n) const;
  double decay() const { return decay_; }
  const std::map<std::string, at::Tensor>& tensors() const { return shadow_; }
  void load(const std::map<std::string, at::Tensor>& tensors, const std::string& source);
  // Copies the EMA weights into `params` (for sampling and export).
  void copy_to(const NamedTensors& params) const;

 private:
  double decay_;
  std::map<std::string, at::Tensor> shadow_;
};

}  // namespace iomm
