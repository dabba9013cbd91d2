#include "apps/autoencoder_training.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/metrics.h"
#include "core/run_dir.h"
#include "core/tensor_io.h"
#include "data/image_pool.h"
#include "models/name_conversion.h"
#include "models/weights.h"

namespace iomm {

namespace fs = std::filesystem;

namespace {

LoopConfig default_autoencoder_loop() {
  LoopConfig l;
  l.steps = 600;
  l.log_every = 50;
  l.checkpoint_every = 300;
  l.optim.lr = 1e-3;
  l.optim.warmup_steps = 20;
  return l;
}

// Encoder means of `images` in batches, without autograd.
at::Tensor encoder_means(FluxAEImpl& model, const at::Tensor& images, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> out;
  for (int64_t i = 0; i < images.size(0); i += batch_size)
    out.push_back(model.encode_mean(images.slice(0, i, std::min(i + batch_size, images.size(0)))));
  return torch::cat(out);
}

}  // namespace

AutoencoderTrainingConfig AutoencoderTrainingConfig::from_config(Config& cfg) {
  AutoencoderTrainingConfig c;
  cfg.get_choice("train.stage", "autoencoder", {"autoencoder"});  // `iomm train` dispatched on it
  auto& m = c.model;
  m.block_out_channels = cfg.get_int_list("autoencoder.block_out_channels", {32, 64, 64});
  m.layers_per_block = cfg.get_int("autoencoder.layers_per_block", 1, 1, 8);
  m.latent_channels = cfg.get_int("autoencoder.latent_channels", 8, 1, 256);
  m.norm_num_groups = cfg.get_int("autoencoder.norm_num_groups", 8, 1, 1024);
  m.mid_attention = cfg.get_bool("autoencoder.mid_attention", true);
  m.scaling_factor = 1.0;  // measured at export
  m.shift_factor = 0.0;
  m.validate(cfg.source() + " [autoencoder]");
  c.images = cfg.get_string("data.images", "");
  if (c.images.empty())
    fail("{}: data.images is not set: name the image-only pool the autoencoder trains on (e.g. --set "
         "data.images=RUN/world/image)",
         cfg.source());
  c.resolution = int(cfg.get_int("data.size", c.resolution, 8, 4096));
  if (c.resolution % m.downsample_factor() != 0)
    fail("{}: data.size = {} is not a multiple of the autoencoder's downsampling factor {} (2 ^ (levels - 1) of "
         "autoencoder.block_out_channels)",
         cfg.source(), c.resolution, m.downsample_factor());
  c.holdout = cfg.get_int("data.holdout", c.holdout, 1);
  c.batch_size = cfg.get_int("train.batch_size", c.batch_size, 1, kMaxBatchSize);
  c.kl_weight = cfg.get_double("train.kl_weight", c.kl_weight, 0.0, 1e3);
  c.stats_samples = cfg.get_int("train.stats_samples", c.stats_samples, 1);
  c.loop = LoopConfig::from_config(cfg, default_autoencoder_loop());
  return c;
}

LatentStats measure_latent_stats(FluxAEImpl& model, const at::Tensor& images, int64_t batch_size) {
  auto mu = encoder_means(model, images, batch_size).to(torch::kFloat64);
  LatentStats s;
  s.shift = mu.mean().item<double>();
  const double sd = mu.std(/*unbiased=*/false).item<double>();
  if (!(sd > 0) || !std::isfinite(sd))
    fail("measure_latent_stats: the encoder's means have standard deviation {} over {} images, so the latent scale "
         "is undefined (a collapsed or diverged autoencoder); train it again, e.g. with a lower train.kl_weight",
         sd, images.size(0));
  s.scale = 1.0 / sd;
  return s;
}

AutoencoderLoss autoencoder_loss(FluxAEImpl& model, const at::Tensor& images, double kl_weight,
                                 const at::Generator& gen) {
  auto moments = model.encode_moments(images);
  auto mean = moments.narrow(1, 0, model.config.latent_channels);
  // diffusers' DiagonalGaussianDistribution clamps the log-variance the same way.
  auto logvar = moments.narrow(1, model.config.latent_channels, model.config.latent_channels).clamp(-30.0, 20.0);
  auto z = mean;
  if (gen.defined()) z = mean + torch::exp(0.5 * logvar) * at::randn(mean.sizes(), gen, mean.options());
  auto recon = model.decode_raw(z);
  AutoencoderLoss l;
  l.mse = torch::mse_loss(recon, images);
  l.kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean();
  l.total = l.mse + kl_weight * l.kl;
  return l;
}

double reconstruction_psnr(FluxAEImpl& model, const at::Tensor& images, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  double se = 0;
  for (int64_t i = 0; i < images.size(0); i += batch_size) {
    auto x = images.slice(0, i, std::min(i + batch_size, images.size(0)));
    auto y = model.decode_latent(model.encode_latent(x)).clamp(-1, 1);
    se += ((y - x) / 2).pow(2).sum().item<double>();
  }
  const double mse = se / double(images.numel());
  return mse > 0 ? 10.0 * std::log10(1.0 / mse) : std::numeric_limits<double>::infinity();
}

namespace {

// Reconstruction on the shared loop: micro-batch k draws its images from the training part of the pool with the
// generator of (seed, step, micro), so a resumed run draws the same batches.
class AutoencoderStage : public TrainStage {
 public:
  AutoencoderStage(const AutoencoderTrainingConfig& c, FluxAE model, at::Tensor train_images)
      : c_(c), model_(std::move(model)), train_(std::move(train_images)) {}

  std::string name() const override { return "autoencoder"; }
  NamedTensors parameters() override { return trainable_parameters(*model_); }
  void set_training(bool on) override { model_->train(on); }
  int64_t micro_batch() const override { return c_.batch_size; }
  MicroStep micro_step(int64_t step, int64_t micro, double scale) override {
    auto gen = step_generator(c_.loop.seed, step, micro);
    auto idx = at::randint(train_.size(0), {c_.batch_size}, gen, torch::kLong);
    auto x = data::to_model_range(train_.index_select(0, idx));
    auto l = autoencoder_loss(*model_, x, c_.kl_weight, gen);
    (l.total * scale).backward();
    return {l.total.item<double>(), c_.batch_size, {{"mse", {l.mse.item<double>(), 1}}, {"kl", {l.kl.item<double>(), 1}}}};
  }
  // Measures the latent statistics under the exported (EMA) weights, then writes a diffusers AutoencoderKL folder.
  void export_model(const std::string& dir) override {
    const bool was_training = model_->is_training();
    model_->eval();
    const int64_t n = std::min(c_.stats_samples, train_.size(0));
    auto stats = measure_latent_stats(*model_, data::to_model_range(train_.slice(0, 0, n)));
    model_->config.shift_factor = stats.shift;
    model_->config.scaling_factor = stats.scale;
    model_->train(was_training);
    fs::create_directories(dir);
    TensorMap tensors;
    for (auto& [name, t] : module_state(*model_)) tensors[name] = t.to(torch::kFloat32).contiguous();
    save_tensors(dir + "/diffusion_pytorch_model.safetensors", vae_to_diffusers(tensors), {{"format", "pt"}});
    write_file_atomic(dir + "/config.json", model_->config.to_diffusers_json().dump(2) + "\n");
    spdlog::info("autoencoder: latent shift {:.4f}, scale {:.4f} (measured on {} training images)", stats.shift,
                 stats.scale, n);
  }

 private:
  const AutoencoderTrainingConfig& c_;
  FluxAE model_;
  at::Tensor train_;  // uint8 [N, 3, R, R]
};

}  // namespace

AutoencoderTrainingResult train_autoencoder(Config& cfg, const std::string& run_dir, bool resume) {
  auto c = AutoencoderTrainingConfig::from_config(cfg);
  cfg.check_unused();
  auto run = RunDir::open(run_dir, resume);
  run.attach_log();
  run.write_config(cfg);
  apply_process_settings(c.loop);

  auto pool = data::load_image_pool(c.images, c.resolution, /*require_captions=*/false);
  if (pool.size() <= c.holdout)
    fail("{}: {} images, but data.holdout = {} are kept for evaluation; give a larger pool or a smaller "
         "data.holdout",
         c.images, pool.size(), c.holdout);
  const int64_t n_train = pool.size() - c.holdout;
  torch::manual_seed(c.loop.seed);
  FluxAE model(c.model);
  spdlog::info("autoencoder: FLUX AE {} params (channels {}, {} per level, {} latent channels, factor {}); {} "
               "training + {} held-out images; {} steps x batch {}",
               count_parameters(*model), fmt::join(c.model.block_out_channels, "-"), c.model.layers_per_block,
               c.model.latent_channels, c.model.downsample_factor(), n_train, c.holdout, c.loop.steps, c.batch_size);
  AutoencoderStage stage(c, model, pool.images.slice(0, 0, n_train));
  auto loop = run_training(stage, c.loop, run, resume);
  AutoencoderTrainingResult r;
  if (!loop.finished) return r;
  r.finished = true;
  r.model_dir = loop.model_dir;
  r.seconds = loop.seconds;

  // Scored as every consumer loads it: through load_flux_ae and the measured scale and shift.
  auto exported = load_flux_ae(r.model_dir);
  auto held_out = data::to_model_range(pool.images.slice(0, n_train));
  const double psnr = reconstruction_psnr(*exported, held_out);
  r.eval = {{"held_out_psnr_db", psnr},
            {"held_out_images", c.holdout},
            {"train_images", n_train},
            {"latent_shift", exported->config.shift_factor},
            {"latent_scale", exported->config.scaling_factor},
            {"train_seconds", r.seconds}};
  write_file_atomic(run.file("autoencoder_eval.json"), r.eval.dump(2) + "\n");
  MetricsWriter(run.file("metrics.jsonl"), /*append=*/true)
      .write({{"event", "autoencoder_eval"}, {"held_out_psnr_db", psnr}});
  spdlog::info("autoencoder: held-out PSNR {:.2f} dB on {} images ({:.1f} s)", psnr, c.holdout, r.seconds);
  return r;
}

}  // namespace iomm
