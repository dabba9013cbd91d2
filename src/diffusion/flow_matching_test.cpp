#include <gtest/gtest.h>

#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "core/config.h"
#include "diffusion/flow_matching.h"

using namespace iomm;

namespace {

std::vector<double> linear_sigmas(int64_t n) {
  std::vector<double> s;
  for (int64_t i = 0; i <= n; ++i) s.push_back(1.0 - static_cast<double>(i) / n);
  return s;
}

// Data distribution N(m, s^2) (1-D, elementwise). With x_sigma = (1 - sigma) x0 + sigma z the marginal is
// N((1 - sigma) m, V), V = (1 - sigma)^2 s^2 + sigma^2, and the exact velocity field E[z - x0 | x] is
//   v(x, sigma) = -m + (sigma - (1 - sigma) s^2) / V * (x - (1 - sigma) m).
// The probability-flow ODE carries noise z (sigma = 1) to m + s z at sigma = 0.
struct GaussianField {
  double m = 0.5, s = 0.3;
  double V(double sigma) const { return (1 - sigma) * (1 - sigma) * s * s + sigma * sigma; }
  at::Tensor operator()(const at::Tensor& x, double sigma) const {
    return -m + (sigma - (1 - sigma) * s * s) / V(sigma) * (x - (1 - sigma) * m);
  }
};

}  // namespace

TEST(Flow, StraightPathsAreIntegratedExactly) {
  // A single data point x0: the exact field is (x - x0) / sigma, constant along each straight path.
  auto x0 = torch::randn({4, 3}, torch::kDouble), z = torch::randn({4, 3}, torch::kDouble);
  VelocityFn v = [&](const at::Tensor& x, double sigma) { return (x - x0) / sigma; };
  for (auto sigmas : {linear_sigmas(1), linear_sigmas(5), flux_schedule(7, 1024).sigmas}) {
    EXPECT_LT((sample_euler(v, z, sigmas) - x0).abs().max().item<double>(), 1e-12);
    EXPECT_LT((sample_dpmpp_2m(v, z, sigmas) - x0).abs().max().item<double>(), 1e-12);
  }
  // and the constant field z - x0 (the training target) moves z to x0 in any number of Euler steps
  VelocityFn c = [&](const at::Tensor&, double) { return z - x0; };
  EXPECT_LT((sample_euler(c, z, linear_sigmas(3)) - x0).abs().max().item<double>(), 1e-12);
}

TEST(Flow, SamplersConvergeWithTheirOrderOnACurvedField) {
  GaussianField f;
  auto z = torch::linspace(-2.5, 2.5, 11, torch::kDouble);
  auto exact_at = [&](double sigma) { return (1 - sigma) * f.m + std::sqrt(f.V(sigma)) * z; };
  VelocityFn v = [&](const at::Tensor& x, double sigma) { return f(x, sigma); };
  // Order: integrate the exact trajectory from sigma 0.95 to 0.05 (away from the lambda = +-inf ends, where
  // DPM-Solver++ falls back to first-order steps).
  std::vector<double> err_euler, err_dpm;
  for (int64_t n : {20, 40, 80, 160}) {
    std::vector<double> sig;
    for (int64_t i = 0; i <= n; ++i) sig.push_back(0.95 - 0.9 * static_cast<double>(i) / n);
    err_euler.push_back((sample_euler(v, exact_at(0.95), sig) - exact_at(0.05)).abs().max().item<double>());
    err_dpm.push_back((sample_dpmpp_2m(v, exact_at(0.95), sig) - exact_at(0.05)).abs().max().item<double>());
  }
  for (size_t i = 1; i < err_euler.size(); ++i) {
    double re = err_euler[i - 1] / err_euler[i], rd = err_dpm[i - 1] / err_dpm[i];
    std::printf("steps x2: euler error %.3e -> %.3e (ratio %.2f), dpm++2m %.3e -> %.3e (ratio %.2f)\n",
                err_euler[i - 1], err_euler[i], re, err_dpm[i - 1], err_dpm[i], rd);
    EXPECT_GT(re, 1.8) << "Euler is first order";
    EXPECT_LT(re, 2.2) << "Euler is not better than first order";
    EXPECT_GT(rd, 3.3) << "DPM-Solver++(2M) is second order";
    EXPECT_LT(rd, 4.8);
  }
  // The full path from pure noise (sigma 1) to data (sigma 0): both land on the exact answer m + s z.
  auto full = linear_sigmas(160);
  double e_euler = (sample_euler(v, z, full) - exact_at(0.0)).abs().max().item<double>();
  double e_dpm = (sample_dpmpp_2m(v, z, full) - exact_at(0.0)).abs().max().item<double>();
  std::printf("noise -> data in 160 steps: euler error %.3e, dpm++2m %.3e\n", e_euler, e_dpm);
  EXPECT_LT(e_euler, 0.01);
  EXPECT_LT(e_dpm, 0.1 * e_euler);
}

TEST(Flow, CallbackSeesEveryStep) {
  GaussianField f;
  std::vector<std::pair<double, double>> seen;
  auto sig = flux_schedule(6, 256).sigmas;
  for (auto name : {"euler", "dpmpp_2m"}) {
    seen.clear();
    int64_t calls = 0;
    VelocityFn v = [&](const at::Tensor& x, double s) { ++calls; return f(x, s); };
    sample_flow(name, v, torch::zeros({2}, torch::kDouble), sig,
                [&](int64_t i, int64_t n, double s, double sn, const at::Tensor& x, const at::Tensor& d) {
                  EXPECT_EQ(n, 6);
                  EXPECT_EQ(i, static_cast<int64_t>(seen.size()));
                  EXPECT_TRUE(x.defined() && d.defined());
                  seen.emplace_back(s, sn);
                });
    ASSERT_EQ(seen.size(), 6u) << name;
    EXPECT_EQ(calls, 6) << name;
    for (size_t i = 0; i < 6; ++i) {
      EXPECT_EQ(seen[i].first, sig[i]);
      EXPECT_EQ(seen[i].second, sig[i + 1]);
    }
  }
}

TEST(Flow, ClassifierFreeGuidanceBatchesBothBranches) {
  int64_t calls = 0;
  VelocityFn batched = [&](const at::Tensor& x2, double sigma) {
    ++calls;
    EXPECT_EQ(x2.size(0), 6);
    auto halves = x2.chunk(2, 0);
    EXPECT_TRUE(torch::equal(halves[0], halves[1]));
    return torch::cat({halves[0] * 2 + sigma, halves[1] * 0.5}, 0);  // cond ; uncond
  };
  auto g = classifier_free_guidance(batched, 4.0);
  auto x = torch::randn({3, 5}, torch::kDouble);
  auto out = g(x, 0.25);
  auto expect = x * 0.5 + 4.0 * ((x * 2 + 0.25) - x * 0.5);
  EXPECT_LT((out - expect).abs().max().item<double>(), 1e-12);
  EXPECT_EQ(calls, 1);
}

TEST(Flow, ShiftsAndSchedules) {
  EXPECT_DOUBLE_EQ(flux_mu(256), 0.5);
  EXPECT_NEAR(flux_mu(4096), 1.15, 1e-12);
  EXPECT_NEAR(std::exp(flux_mu(1024)), 1.88, 0.01);  // 512^2 images
  for (double t : {0.1, 0.5, 0.9}) EXPECT_NEAR(time_shift(0.7, 1.0, t), static_shift(std::exp(0.7), t), 1e-12);
  auto s = flux_schedule(4, 4096);
  ASSERT_EQ(s.sigmas.size(), 5u);
  EXPECT_EQ(s.sigmas.front(), 1.0);
  EXPECT_EQ(s.sigmas.back(), 0.0);
  EXPECT_NEAR(s.sigmas[2], static_shift(std::exp(1.15), 0.5), 1e-12);
  for (size_t i = 1; i < s.sigmas.size(); ++i) EXPECT_LT(s.sigmas[i], s.sigmas[i - 1]);
  auto u = flux_schedule(4, 4096, /*shift=*/false);
  EXPECT_DOUBLE_EQ(u.sigmas[1], 0.75);
  // diffusers, static shift 3: sigma_min is shifted once in the constructor and again in set_timesteps.
  FlowMatchEulerOptions o;
  o.shift = 3.0;
  auto d = flow_match_euler_schedule(o, 3);
  double smin = 3.0 * 0.001 / (1 + 2.0 * 0.001);
  EXPECT_NEAR(d.sigmas[0], 1.0, 1e-7);
  EXPECT_NEAR(d.sigmas[2], static_shift(3.0, smin), 1e-7);
  EXPECT_NEAR(d.sigmas[1], static_shift(3.0, (1.0 + smin) / 2), 1e-6);
  EXPECT_NEAR(d.timesteps[1], 1000 * d.sigmas[1], 1e-3);
  EXPECT_EQ(d.sigmas.back(), 0.0);
  o.use_dynamic_shifting = true;
  EXPECT_THROW(flow_match_euler_schedule(o, 3), std::exception);
}

TEST(Flow, TimestepSamplingAndInterpolation) {
  TimestepSampling ts;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(123);
  auto a = sample_timesteps(ts, 20000, 256, gen);
  EXPECT_GT(a.min().item<float>(), 0.0f);
  EXPECT_LT(a.max().item<float>(), 1.0f);
  EXPECT_NEAR(a.mean().item<float>(), 0.5, 0.01);  // logit-normal(0, 1) is symmetric about 1/2
  EXPECT_NEAR(torch::logit(a).std().item<float>(), 1.0, 0.03);
  auto gen2 = at::make_generator<at::CPUGeneratorImpl>(123);
  EXPECT_TRUE(torch::equal(a, sample_timesteps(ts, 20000, 256, gen2)));  // reproducible
  ts.shift = "resolution";
  auto gen3 = at::make_generator<at::CPUGeneratorImpl>(123);
  auto b = sample_timesteps(ts, 20000, 4096, gen3);
  EXPECT_LT((b - time_shift(1.15, 1.0, a)).abs().max().item<float>(), 1e-6);
  ts.kind = "uniform";
  ts.shift = "static";
  ts.shift_value = 3.0;
  auto c = sample_timesteps(ts, 20000, 256, gen);
  EXPECT_GT(c.mean().item<float>(), 0.6);  // shifted towards noise

  auto cfg = Config::parse("[t]\nkind = \"uniform\"\nshift = \"resolution\"\n", "t.toml");
  auto fromcfg = TimestepSampling::from_config(cfg, "t");
  EXPECT_EQ(fromcfg.kind, "uniform");
  EXPECT_EQ(fromcfg.shift, "resolution");

  auto x = torch::randn({3, 2, 4}), z = torch::randn({3, 2, 4});
  auto p = flow_interpolate(x, z, torch::tensor({0.0f, 1.0f, 0.25f}));
  EXPECT_TRUE(torch::allclose(p.x_t[0], x[0]));
  EXPECT_TRUE(torch::allclose(p.x_t[1], z[1]));
  EXPECT_TRUE(torch::allclose(p.x_t[2], 0.75 * x[2] + 0.25 * z[2]));
  EXPECT_TRUE(torch::allclose(p.target, z - x));
}
