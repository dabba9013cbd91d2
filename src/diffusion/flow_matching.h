// Rectified flow (FLUX / SD3 convention): x_t = (1 - t) x + t z with z ~ N(0, I), t in [0, 1] (1 = noise), and the
// model predicts the velocity z - x. Training-time timestep sampling, the inference sigma schedules (diffusers'
// FlowMatchEulerDiscreteScheduler and FLUX's own), and ODE samplers (Euler, DPM-Solver++(2M)) with true CFG.
// The samplers take the model as a callback, so any network (or an analytic field, in tests) plugs in.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

namespace iomm {

class Config;

// ------------------------------------------------------------------------------------------------- shifts

// FLUX's resolution-dependent mu: linear in the image token count, base_shift at base_seq_len tokens, max_shift at
// max_seq_len (diffusers' calculate_shift).
double flux_mu(int64_t image_seq_len, int64_t base_seq_len = 256, int64_t max_seq_len = 4096, double base_shift = 0.5,
               double max_shift = 1.15);
// Exponential time shift e^mu / (e^mu + (1/t - 1)^sigma); with sigma = 1 equal to the static shift s = e^mu.
double time_shift(double mu, double sigma, double t);
at::Tensor time_shift(double mu, double sigma, const at::Tensor& t);
// Static shift s t / (1 + (s - 1) t).
double static_shift(double shift, double t);
at::Tensor static_shift(double shift, const at::Tensor& t);

// ------------------------------------------------------------------------------------------------- training

struct TimestepSampling {
  std::string kind = "logit_normal";  // "uniform" or "logit_normal"
  double mean = 0.0, std = 1.0;       // logit-normal: t = sigmoid(N(mean, std))
  std::string shift = "none";         // "none", "static" (shift_value) or "resolution" (FLUX's mu from N tokens)
  double shift_value = 1.0;
  int64_t base_seq_len = 256, max_seq_len = 4096;
  double base_shift = 0.5, max_shift = 1.15;

  // Keys under `prefix` (e.g. "train.timesteps"): kind, mean, std, shift, shift_value, base_seq_len, ...
  static TimestepSampling from_config(Config& cfg, const std::string& prefix);
};

// t in (0, 1) per sample, [batch] fp32 on `device`. `image_seq_len` is used by the "resolution" shift.
at::Tensor sample_timesteps(const TimestepSampling& s, int64_t batch, int64_t image_seq_len,
                            std::optional<at::Generator> gen = std::nullopt, const c10::Device& device = c10::kCPU);

struct FlowPair {
  at::Tensor x_t;     // (1 - t) x + t z
  at::Tensor target;  // z - x
};
// x data, z noise (same shape), t [B] broadcast over the other dims.
FlowPair flow_interpolate(const at::Tensor& x, const at::Tensor& z, const at::Tensor& t);

// ------------------------------------------------------------------------------------------------- schedules

struct Schedule {
  std::vector<double> sigmas;     // N + 1 values, from ~1 down to the final 0
  std::vector<double> timesteps;  // N model timesteps (sigma * num_train_timesteps for diffusers; = sigma for FLUX)
};

// diffusers' FlowMatchEulerDiscreteScheduler.set_timesteps (exponential time shift, no karras/beta/exponential
// sigma variants, invert_sigmas off). Values are rounded to fp32 as diffusers stores them.
struct FlowMatchEulerOptions {
  int64_t num_train_timesteps = 1000;
  double shift = 1.0;
  bool use_dynamic_shifting = false;
  double shift_terminal = 0.0;  // 0 = off
};
// `sigmas_in`, when given, replaces the default linspace (as FluxPipeline passes linspace(1, 1/N, N)).
// `mu` is required with use_dynamic_shifting.
Schedule flow_match_euler_schedule(const FlowMatchEulerOptions& o, int64_t num_steps, std::optional<double> mu = {},
                                   const std::vector<double>* sigmas_in = nullptr);
// What diffusers' FluxPipeline does: sigmas linspace(1, 1/N, N), mu = flux_mu(image_seq_len), dynamic shifting.
Schedule flux_pipeline_schedule(int64_t num_steps, int64_t image_seq_len);
// BFL's get_schedule: linspace(1, 0, N + 1), time-shifted with FLUX's mu when `shift` (timesteps = sigmas[:N]).
Schedule flux_schedule(int64_t num_steps, int64_t image_seq_len, bool shift = true, double base_shift = 0.5,
                       double max_shift = 1.15);
// Static shift on linspace(1, 0, N + 1) (SD3 / Z-Image style; shift 1 = plain linear).
Schedule static_shift_schedule(int64_t num_steps, double shift);

// ------------------------------------------------------------------------------------------------- sampling

// The model: velocity v(x, sigma) for the whole batch at noise level sigma (the MM-DiT's timestep).
using VelocityFn = std::function<at::Tensor(const at::Tensor& x, double sigma)>;
// Called after every step: step index, number of steps, sigma, sigma_next, the new x, the model's x0 estimate.
using StepCallback = std::function<void(int64_t step, int64_t num_steps, double sigma, double sigma_next,
                                        const at::Tensor& x, const at::Tensor& denoised)>;

// Euler on dx/dsigma = v: x <- x + (sigma_next - sigma) v.
at::Tensor sample_euler(const VelocityFn& model, at::Tensor x, const std::vector<double>& sigmas,
                        const StepCallback& callback = nullptr);
// DPM-Solver++(2M) in the flow parametrisation (alpha = 1 - sigma, data prediction x0 = x - sigma v, lambda =
// log(alpha / sigma)); first order on the first step and on the step to sigma = 0.
at::Tensor sample_dpmpp_2m(const VelocityFn& model, at::Tensor x, const std::vector<double>& sigmas,
                           const StepCallback& callback = nullptr);
// By name: "euler" or "dpmpp_2m".
at::Tensor sample_flow(const std::string& sampler, const VelocityFn& model, at::Tensor x,
                       const std::vector<double>& sigmas, const StepCallback& callback = nullptr);

// True classifier-free guidance with both branches in one batch: `batched` receives cat([x, x]) and returns
// cat([v_cond, v_uncond]); the result is v_uncond + scale (v_cond - v_uncond).
VelocityFn classifier_free_guidance(VelocityFn batched, double scale);

}  // namespace iomm
