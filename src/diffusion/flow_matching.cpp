#include "diffusion/flow_matching.h"

#include <cmath>
#include <limits>

#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"

namespace iomm {

// ------------------------------------------------------------------------------------------------- shifts

double flux_mu(int64_t n, int64_t base_seq_len, int64_t max_seq_len, double base_shift, double max_shift) {
  if (max_seq_len == base_seq_len) fail("flux_mu: base_seq_len and max_seq_len must differ (both {})", base_seq_len);
  double m = (max_shift - base_shift) / static_cast<double>(max_seq_len - base_seq_len);
  double b = base_shift - m * static_cast<double>(base_seq_len);
  return static_cast<double>(n) * m + b;
}

double time_shift(double mu, double sigma, double t) {
  double e = std::exp(mu);
  if (t <= 0.0) return 0.0;  // 1/t - 1 = inf
  return e / (e + std::pow(1.0 / t - 1.0, sigma));
}

at::Tensor time_shift(double mu, double sigma, const at::Tensor& t) {
  double e = std::exp(mu);
  return e / (e + torch::pow(1.0 / t - 1.0, sigma));
}

double static_shift(double s, double t) { return s * t / (1.0 + (s - 1.0) * t); }

at::Tensor static_shift(double s, const at::Tensor& t) { return s * t / (1.0 + (s - 1.0) * t); }

// ------------------------------------------------------------------------------------------------- training

TimestepSampling TimestepSampling::from_config(Config& cfg, const std::string& prefix) {
  TimestepSampling s;
  auto k = [&](const char* n) { return prefix + "." + n; };
  s.kind = cfg.get_choice(k("kind"), s.kind, {"uniform", "logit_normal"});
  s.mean = cfg.get_double(k("mean"), s.mean);
  s.std = cfg.get_double(k("std"), s.std, 1e-6);
  s.shift = cfg.get_choice(k("shift"), s.shift, {"none", "static", "resolution"});
  s.shift_value = cfg.get_double(k("shift_value"), s.shift_value, 1e-6);
  s.base_seq_len = cfg.get_int(k("base_seq_len"), s.base_seq_len, 1);
  s.max_seq_len = cfg.get_int(k("max_seq_len"), s.max_seq_len, 1);
  s.base_shift = cfg.get_double(k("base_shift"), s.base_shift);
  s.max_shift = cfg.get_double(k("max_shift"), s.max_shift);
  return s;
}

at::Tensor sample_timesteps(const TimestepSampling& s, int64_t batch, int64_t image_seq_len,
                            std::optional<at::Generator> gen, const c10::Device& device) {
  auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  at::Tensor t;
  if (s.kind == "uniform") t = at::rand({batch}, gen, opts);
  else if (s.kind == "logit_normal") t = torch::sigmoid(at::randn({batch}, gen, opts) * s.std + s.mean);
  else fail("timestep sampling kind '{}' is unknown; use uniform or logit_normal", s.kind);
  if (s.shift == "static") t = static_shift(s.shift_value, t);
  else if (s.shift == "resolution")
    t = time_shift(flux_mu(image_seq_len, s.base_seq_len, s.max_seq_len, s.base_shift, s.max_shift), 1.0, t);
  else if (s.shift != "none") fail("timestep shift '{}' is unknown; use none, static or resolution", s.shift);
  return t;
}

FlowPair flow_interpolate(const at::Tensor& x, const at::Tensor& z, const at::Tensor& t) {
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = x.size(0);
  auto tt = t.to(x.scalar_type()).reshape(shape);
  return {(1 - tt) * x + tt * z, z - x};
}

// ------------------------------------------------------------------------------------------------- schedules

static double f32(double v) { return static_cast<double>(static_cast<float>(v)); }

Schedule flow_match_euler_schedule(const FlowMatchEulerOptions& o, int64_t n, std::optional<double> mu,
                                   const std::vector<double>* sigmas_in) {
  if (n < 1) fail("a schedule needs at least 1 step (got {})", n);
  if (o.use_dynamic_shifting && !mu) fail("use_dynamic_shifting needs mu (e.g. flux_mu(image tokens))");
  const double T = static_cast<double>(o.num_train_timesteps);
  std::vector<double> sig;
  if (sigmas_in) {
    if (static_cast<int64_t>(sigmas_in->size()) != n) fail("{} sigmas given for {} steps", sigmas_in->size(), n);
    for (double s : *sigmas_in) sig.push_back(f32(s));
  } else {
    // The scheduler's construction-time table: sigma_max = 1 and sigma_min = (shifted, unless dynamic) 1/T, in fp32.
    float smin = static_cast<float>(1.0f / static_cast<float>(T));
    if (!o.use_dynamic_shifting) {
      float sh = static_cast<float>(o.shift);
      smin = sh * smin / (1.0f + (sh - 1.0f) * smin);
    }
    double smax_t = 1.0 * T, smin_t = static_cast<double>(smin) * T;
    for (int64_t i = 0; i < n; ++i) {
      double ts = n == 1 ? smax_t : smax_t + (smin_t - smax_t) * static_cast<double>(i) / static_cast<double>(n - 1);
      sig.push_back(ts / T);
    }
  }
  for (auto& s : sig) s = o.use_dynamic_shifting ? time_shift(*mu, 1.0, s) : static_shift(o.shift, s);
  if (o.shift_terminal > 0) {
    double scale = (1.0 - sig.back()) / (1.0 - o.shift_terminal);
    for (auto& s : sig) s = 1.0 - (1.0 - s) / scale;
  }
  Schedule out;
  for (auto s : sig) {
    out.sigmas.push_back(f32(s));
    out.timesteps.push_back(f32(static_cast<float>(s) * static_cast<float>(T)));
  }
  out.sigmas.push_back(0.0);
  return out;
}

Schedule flux_pipeline_schedule(int64_t n, int64_t image_seq_len) {
  std::vector<double> lin;
  for (int64_t i = 0; i < n; ++i)
    lin.push_back(n == 1 ? 1.0 : 1.0 + (1.0 / static_cast<double>(n) - 1.0) * static_cast<double>(i) / (n - 1));
  FlowMatchEulerOptions o;
  o.shift = 3.0;
  o.use_dynamic_shifting = true;
  return flow_match_euler_schedule(o, n, flux_mu(image_seq_len), &lin);
}

Schedule flux_schedule(int64_t n, int64_t image_seq_len, bool shift, double base_shift, double max_shift) {
  if (n < 1) fail("a schedule needs at least 1 step (got {})", n);
  Schedule out;
  double mu = flux_mu(image_seq_len, 256, 4096, base_shift, max_shift);
  for (int64_t i = 0; i <= n; ++i) {
    double t = 1.0 - static_cast<double>(i) / static_cast<double>(n);
    out.sigmas.push_back(shift ? time_shift(mu, 1.0, t) : t);
  }
  out.timesteps.assign(out.sigmas.begin(), out.sigmas.end() - 1);
  return out;
}

Schedule static_shift_schedule(int64_t n, double shift) {
  if (n < 1) fail("a schedule needs at least 1 step (got {})", n);
  Schedule out;
  for (int64_t i = 0; i <= n; ++i) out.sigmas.push_back(static_shift(shift, 1.0 - static_cast<double>(i) / n));
  out.timesteps.assign(out.sigmas.begin(), out.sigmas.end() - 1);
  return out;
}

// ------------------------------------------------------------------------------------------------- sampling

static void check_sigmas(const std::vector<double>& s) {
  if (s.size() < 2) fail("a sampler needs at least 2 sigmas (one step); got {}", s.size());
}

at::Tensor sample_euler(const VelocityFn& model, at::Tensor x, const std::vector<double>& sigmas,
                        const StepCallback& callback) {
  check_sigmas(sigmas);
  int64_t n = static_cast<int64_t>(sigmas.size()) - 1;
  for (int64_t i = 0; i < n; ++i) {
    double s = sigmas[i], sn = sigmas[i + 1];
    auto v = model(x, s);
    if (callback) {
      auto denoised = x - s * v;
      x = x + (sn - s) * v;
      callback(i, n, s, sn, x, denoised);
    } else {
      x = x + (sn - s) * v;
    }
  }
  return x;
}

static double flow_lambda(double sigma) {
  if (sigma >= 1.0) return -std::numeric_limits<double>::infinity();
  return std::log((1.0 - sigma) / sigma);
}

at::Tensor sample_dpmpp_2m(const VelocityFn& model, at::Tensor x, const std::vector<double>& sigmas,
                           const StepCallback& callback) {
  check_sigmas(sigmas);
  int64_t n = static_cast<int64_t>(sigmas.size()) - 1;
  at::Tensor prev_denoised;
  double prev_h = std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    double s = sigmas[i], sn = sigmas[i + 1];
    auto denoised = x - s * model(x, s);
    double h = std::numeric_limits<double>::infinity();
    if (sn <= 0.0) {
      x = denoised;  // the step to sigma = 0 lands on the data prediction (first order)
    } else {
      h = flow_lambda(sn) - flow_lambda(s);
      at::Tensor d = denoised;
      if (prev_denoised.defined() && std::isfinite(prev_h) && std::isfinite(h)) {
        double r = prev_h / h;
        d = (1.0 + 1.0 / (2.0 * r)) * denoised - (1.0 / (2.0 * r)) * prev_denoised;
      }
      x = (sn / s) * x - (1.0 - sn) * std::expm1(-h) * d;
    }
    prev_denoised = denoised;
    prev_h = h;
    if (callback) callback(i, n, s, sn, x, denoised);
  }
  return x;
}

at::Tensor sample_flow(const std::string& sampler, const VelocityFn& model, at::Tensor x,
                       const std::vector<double>& sigmas, const StepCallback& callback) {
  if (sampler == "euler") return sample_euler(model, std::move(x), sigmas, callback);
  if (sampler == "dpmpp_2m") return sample_dpmpp_2m(model, std::move(x), sigmas, callback);
  fail("sampler '{}' is unknown; use euler or dpmpp_2m", sampler);
}

VelocityFn classifier_free_guidance(VelocityFn batched, double scale) {
  return [batched = std::move(batched), scale](const at::Tensor& x, double sigma) {
    auto out = batched(torch::cat({x, x}, 0), sigma);
    if (out.size(0) != 2 * x.size(0))
      fail("CFG: the batched model returned batch {} for an input of batch {} (expected cond ; uncond)", out.size(0),
           2 * x.size(0));
    auto cu = out.chunk(2, 0);
    return cu[1] + scale * (cu[0] - cu[1]);
  };
}

}  // namespace iomm
