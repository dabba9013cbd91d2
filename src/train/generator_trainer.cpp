#include "train/generator_trainer.h"

#include <chrono>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/metrics.h"
#include "core/progress.h"
#include "core/run_dir.h"
#include "data/image.h"
#include "data/image_pool.h"
#include "models/weights.h"
#include "model/iomm_model.h"
#include "report/image_grid.h"  // iomm::report
#include "train/checkpoint.h"
#include "train/determinism.h"
#include "train/optimizer.h"

namespace iomm {

namespace fs = std::filesystem;

namespace {

struct TrainSettings {
  std::string stage, data;
  double mix_ratio = 0.5;
  std::string image_data, pair_data;
  int64_t steps = 1000, batch_size = 32, grad_accum = 1;
  uint64_t seed = 0;
  double cfg_drop = 0.1;
  bool cfg_drop_images = true;
  std::string init_from;
  double ema_decay = 0.0;
  int64_t log_every = 10, sample_every = 0, checkpoint_every = 0, keep_last = 2;
  int64_t stop_at = 0;   // save a checkpoint and stop after this step (a planned interruption; 0 = run to the end)
  int64_t threads = 0;   // torch intra-op threads; 0 = one per core
  int64_t max_skipped_in_a_row = 50;  // stop when this many consecutive steps had a non-finite gradient
  bool deterministic = false;
  TimestepSampling timesteps;
  OptimConfig optim;
  GenerateOptions sample;
  std::vector<std::string> sample_prompts;
  int64_t sample_count = 8;
};

}  // namespace

std::string train_data(Config& cfg) {
  auto stage = cfg.get_choice("train.stage", "pretrain", {"pretrain", "finetune"});
  return cfg.get_choice("train.data", stage == "pretrain" ? "image" : "mix", {"image", "pair", "mix"});
}

namespace {

TrainSettings read_settings(Config& cfg) {
  TrainSettings s;
  s.stage = cfg.get_choice("train.stage", "pretrain", {"pretrain", "finetune"});
  s.data = train_data(cfg);
  s.mix_ratio = cfg.get_double("train.mix_ratio", s.mix_ratio, 0.0, 1.0);
  s.image_data = cfg.get_string("data.images", "");
  s.pair_data = cfg.get_string("data.pairs", "");
  s.steps = cfg.get_int("train.steps", s.steps, 1);
  s.batch_size = cfg.get_int("train.batch_size", s.batch_size, 1);
  s.grad_accum = cfg.get_int("train.grad_accum", s.grad_accum, 1);
  s.seed = uint64_t(cfg.get_int("train.seed", 0, 0));
  s.cfg_drop = cfg.get_double("train.cfg_drop", s.cfg_drop, 0.0, 1.0);
  s.cfg_drop_images = cfg.get_bool("train.cfg_drop_images", s.cfg_drop_images);
  s.ema_decay = cfg.get_double("train.ema_decay", s.ema_decay, 0.0, 0.999999);
  s.log_every = cfg.get_int("train.log_every", s.log_every, 1);
  s.sample_every = cfg.get_int("train.sample_every", s.sample_every, 0);
  s.checkpoint_every = cfg.get_int("train.checkpoint_every", s.checkpoint_every, 0);
  s.keep_last = cfg.get_int("train.keep_last", s.keep_last, 1);
  s.stop_at = cfg.get_int("train.stop_at", s.stop_at, 0);
  s.threads = cfg.get_int("train.threads", s.threads, 0, 1024);
  s.max_skipped_in_a_row = cfg.get_int("train.max_skipped_in_a_row", s.max_skipped_in_a_row, 1);
  s.deterministic = cfg.get_bool("train.deterministic", s.deterministic);
  s.timesteps = TimestepSampling::from_config(cfg, "train.timesteps");
  s.optim = OptimConfig::from_config(cfg, "optim", s.steps);
  s.sample.steps = cfg.get_int("sample.steps", s.sample.steps, 1);
  s.sample.cfg_scale = cfg.get_double("sample.cfg_scale", s.sample.cfg_scale, 0.0);
  s.sample.sampler = cfg.get_choice("sample.sampler", s.sample.sampler, {"euler", "dpmpp_2m"});
  s.sample.shift = cfg.get_double("sample.shift", s.sample.shift, 1e-3);
  s.sample.seed = uint64_t(cfg.get_int("sample.seed", 0, 0));
  s.sample_prompts = cfg.get_string_list("sample.prompts", {});
  s.sample_count = cfg.get_int("sample.count", s.sample_count, 1, 64);
  bool needs_images = s.data != "pair", needs_pairs = s.data != "image";
  if (needs_pairs && s.pair_data.empty())
    fail("{}: train.data = {} needs text-image pairs: set data.pairs to WebDataset shards with captions",
         cfg.source(), s.data);
  if (needs_images && s.image_data.empty() && s.pair_data.empty())
    fail("{}: train.data = {} needs images: set data.images (image-only shards or an image folder)", cfg.source(),
         s.data);
  return s;
}

// A generator for (seed, step, stream): every random draw of a step depends on nothing else.
at::Generator step_generator(uint64_t seed, int64_t step, int64_t stream) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ULL ^ (uint64_t(step) * 0xBF58476D1CE4E5B9ULL) ^
               (uint64_t(stream) * 0x94D049BB133111EBULL);
  x ^= x >> 31;
  return at::make_generator<at::CPUGeneratorImpl>(x);
}

struct Pools {
  std::optional<data::ImagePool> images, pairs;
  const data::ImagePool& image_source() const { return images ? *images : *pairs; }
};

struct Batch {
  at::Tensor images;  // [B,3,R,R] in [-1,1]
  std::vector<ConditionInput> conds;
  std::vector<bool> is_image;  // self-conditioned sample (before CFG dropout)
};

Batch draw_batch(const TrainSettings& s, const Pools& pools, at::Generator& gen) {
  int64_t B = s.batch_size;
  auto u_kind = torch::rand({B}, gen), u_drop = torch::rand({B}, gen);
  const auto& src = pools.image_source();
  auto i_img = torch::randint(src.size(), {B}, gen);
  auto i_pair = torch::randint(pools.pairs ? pools.pairs->size() : 1, {B}, gen);
  auto kind = u_kind.accessor<float, 1>(), drop_u = u_drop.accessor<float, 1>();
  auto img_at = i_img.accessor<int64_t, 1>(), pair_at = i_pair.accessor<int64_t, 1>();
  Batch b;
  std::vector<at::Tensor> images;
  for (int64_t i = 0; i < B; ++i) {
    bool image = s.data == "image" || (s.data == "mix" && kind[i] < s.mix_ratio);
    bool drop = drop_u[i] < s.cfg_drop && (!image || s.cfg_drop_images);
    ConditionInput c;
    at::Tensor img;
    if (image) {
      img = src.batch({img_at[i]})[0];
      c = {ConditionKind::image, "", img};
    } else {
      int64_t k = pair_at[i];
      img = pools.pairs->batch({k})[0];
      c = {ConditionKind::text, pools.pairs->captions[size_t(k)], {}};
    }
    if (drop) c = {ConditionKind::uncond, "", {}};
    images.push_back(img);
    b.conds.push_back(c);
    b.is_image.push_back(image);
  }
  b.images = torch::stack(images);
  return b;
}

// Sample grids: t2i for the sample prompts, and input | reconstruction pairs from unmasked self-conditioning.
void write_samples(IommModel& m, const TrainSettings& s, const Pools& pools, const std::string& dir, int64_t step) {
  fs::create_directories(dir);
  auto stem = fmt::format("{}/step-{:08d}", dir, step);
  if (!s.sample_prompts.empty()) {
    std::vector<ConditionInput> conds;
    for (auto& p : s.sample_prompts) conds.push_back({ConditionKind::text, p, {}});
    auto imgs = m.generate(conds, s.sample);
    report::write_image_grid((imgs + 1) / 2, stem + "-t2i.png", std::min<int64_t>(8, int64_t(conds.size())), 4, 2);
  }
  const auto& src = pools.image_source();
  int64_t n = std::min<int64_t>(s.sample_count, src.size());
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < n; ++i) idx.push_back(i);
  auto inputs = src.batch(idx);
  std::vector<ConditionInput> conds;
  for (int64_t i = 0; i < n; ++i) conds.push_back({ConditionKind::image, "", inputs[i]});
  auto recon = m.generate(conds, s.sample);
  write_png(report::make_pair_grid((inputs + 1) / 2, (recon + 1) / 2, 4, 4, 2), stem + "-recon.png");
}

std::string resolve_model_dir(const std::string& p) {
  if (fs::exists(p + "/iomm.toml")) return p;
  if (fs::exists(p + "/model/iomm.toml")) return p + "/model";
  fail("train.init_from = '{}' is neither a model directory (with iomm.toml) nor a run directory holding model/; "
       "point it at the stage-1 run",
       p);
}

}  // namespace

GeneratorTrainResult train_generator(Config& user_cfg, const std::string& run_path, bool resume) {
  auto t0 = std::chrono::steady_clock::now();
  // Stage 2 starts from stage 1: its model config is the base, the user's config goes on top.
  Config cfg = user_cfg;
  std::string init_from = user_cfg.has("train.init_from") ? user_cfg.get_string("train.init_from", "") : "";
  if (!init_from.empty()) {
    init_from = resolve_model_dir(init_from);
    cfg = Config::load(init_from + "/iomm.toml");
    cfg.merge(user_cfg);
    cfg.get_string("train.init_from", "");
  }
  auto mc = IommModelConfig::from_config(cfg);
  auto s = read_settings(cfg);
  cfg.check_unused();
  auto run = RunDir::open(run_path, resume);
  run.attach_log();
  run.write_config(cfg);
  if (s.deterministic) set_deterministic(true);
  // Explicit, because an earlier stage in the same process may have changed it (the understanding stage runs
  // best on one thread; the generator's batched matmuls use every core).
  at::set_num_threads(int(s.threads > 0 ? s.threads : std::max(1u, std::thread::hardware_concurrency())));

  auto model = IommModel::create(mc, s.seed);
  if (!init_from.empty()) {
    model.load_weights_from(init_from);
    spdlog::info("{}: initialised from {}", s.stage, init_from);
  }
  Pools pools;
  if (s.data != "pair" && !s.image_data.empty())
    pools.images = data::load_image_pool(s.image_data, int(mc.resolution), false);
  if (s.data != "image" || s.image_data.empty())
    pools.pairs = data::load_image_pool(s.pair_data, int(mc.resolution), true);
  if (pools.images) spdlog::info("image-only data: {} ({})", s.image_data, pools.images->stats.summary());
  if (pools.pairs) spdlog::info("pairs: {} ({})", s.pair_data, pools.pairs->stats.summary());

  auto params = model.trainable();
  AdamW opt(params, s.optim);
  std::optional<Ema> ema;
  if (s.ema_decay > 0) ema.emplace(params, s.ema_decay);
  int64_t start = 0;
  if (resume) {
    if (auto dir = latest_checkpoint(run.path)) {
      auto ck = load_checkpoint(*dir);
      torch::NoGradGuard ng;
      const auto& w = ck.files.at("model");
      for (auto& [name, p] : params) {
        auto it = w.find(name);
        if (it == w.end()) fail("{}: model.safetensors has no tensor {}; the run's model changed", *dir, name);
        p.copy_(it->second);
      }
      opt.load_state(ck.files.at("optimizer"), *dir + "/optimizer.safetensors");
      if (ema) {
        if (!ck.files.count("ema"))
          fail("{} has no ema.safetensors but train.ema_decay = {}: the run was started without EMA; resume with "
               "--set train.ema_decay=0, or start a new run",
               *dir, s.ema_decay);
        ema->load(ck.files.at("ema"), *dir + "/ema.safetensors");
      }
      start = ck.step;
      if (ck.state.contains("determinism")) warn_determinism_mismatches(ck.state["determinism"], *dir);
      spdlog::info("resumed from {} at step {}", *dir, start);
    } else {
      spdlog::info("--resume: no complete checkpoint in {}; starting at step 0", run.path);
    }
  }
  spdlog::info("{} ({} data, mix_ratio {}): {} steps × {} × {} accumulation = global batch {}; trainable {:.2f}M "
               "(generator {:.2f}M, adapter {:.2f}M)",
               s.stage, s.data, s.mix_ratio, s.steps, s.batch_size, s.grad_accum, s.batch_size * s.grad_accum,
               double(count_parameters(*model.generator) + (model.conditioner->rqa ? count_parameters(*model.conditioner->rqa) : 0)) / 1e6,
               double(count_parameters(*model.generator)) / 1e6,
               double(model.conditioner->rqa ? count_parameters(*model.conditioner->rqa) : 0) / 1e6);

  MetricsWriter metrics(run.file("metrics.jsonl"), resume && start > 0);
  auto with_ema = [&](auto&& fn) {
    if (!ema) return fn();
    std::vector<at::Tensor> backup;
    for (auto& [n, p] : params) backup.push_back(p.detach().clone());
    ema->copy_to(params);
    fn();
    torch::NoGradGuard ng;
    for (size_t i = 0; i < params.size(); ++i) params[i].second.copy_(backup[i]);
  };
  auto checkpoint = [&](int64_t step) {
    TrainCheckpoint ck;
    ck.step = step;
    for (auto& [n, p] : params) ck.files["model"][n] = p.detach();
    ck.files["optimizer"] = opt.state();
    if (ema) ck.files["ema"] = ema->tensors();
    ck.state = {{"step", step}, {"stage", s.stage}, {"seed", s.seed}, {"determinism", determinism_fingerprint()}};
    save_checkpoint(run.path, ck, int(s.keep_last));
  };

  ProgressBar bar(s.steps - start, s.stage, "step");
  double window_loss = 0, window_img = 0, window_txt = 0;
  int64_t window_n = 0, n_img = 0, n_txt = 0;
  double last_loss = 0;
  auto tw = std::chrono::steady_clock::now();
  model.generator->train();
  for (int64_t step = start; step < s.steps; ++step) {
    double step_loss = 0;
    for (int64_t micro = 0; micro < s.grad_accum; ++micro) {
      auto gen = step_generator(s.seed, step, micro);
      auto b = draw_batch(s, pools, gen);
      auto cond = model.conditioner->forward(b.conds, /*mim=*/true, &gen);
      auto fl = model.loss(b.images, cond, s.timesteps, gen);
      (fl.loss / double(s.grad_accum)).backward();
      step_loss += fl.loss.item<double>() / double(s.grad_accum);
      auto per_sample = fl.per_sample.to(torch::kCPU, torch::kDouble);
      auto per = per_sample.accessor<double, 1>();
      for (size_t i = 0; i < b.is_image.size(); ++i) {
        double l = per[int64_t(i)];
        if (b.is_image[i]) window_img += l, ++n_img;
        else window_txt += l, ++n_txt;
      }
    }
    double gn = opt.step(step);
    opt.fail_if_stuck(s.max_skipped_in_a_row, s.stage, step + 1, run.file("checkpoints"));
    if (ema) ema->update(params, ema->warmup_decay(step));
    window_loss += step_loss;
    ++window_n;
    bar.update(1, fmt::format("loss={:.4f}", step_loss));
    int64_t done = step + 1;
    if (done % s.log_every == 0 || done == s.steps) {
      double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - tw).count();
      last_loss = window_loss / double(window_n);
      nlohmann::json rec = {{"step", done},
                            {"loss", last_loss},
                            {"grad_norm", gn},
                            {"lr", lr_at(s.optim, step)},
                            {"samples_per_s", double(window_n * s.batch_size * s.grad_accum) / dt},
                            {"skipped_steps", opt.skipped()}};
      if (n_img) rec["loss_image"] = window_img / double(n_img);
      if (n_txt) rec["loss_text"] = window_txt / double(n_txt);
      metrics.write(rec);
      window_loss = window_img = window_txt = 0;
      window_n = n_img = n_txt = 0;
      tw = std::chrono::steady_clock::now();
    }
    if (s.sample_every > 0 && (done % s.sample_every == 0 || done == s.steps))
      with_ema([&] { write_samples(model, s, pools, run.file("samples"), done); });
    if (s.checkpoint_every > 0 && done % s.checkpoint_every == 0 && done != s.steps) checkpoint(done);
    if (done == s.stop_at && done != s.steps) {
      checkpoint(done);
      bar.finish();
      spdlog::info("{}: stopped at step {} (train.stop_at); continue with --resume", s.stage, done);
      GeneratorTrainResult r;
      r.steps = done;
      r.final_loss = last_loss;
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      return r;
    }
  }
  bar.finish();
  checkpoint(s.steps);
  if (opt.skipped()) spdlog::warn("{} steps had a non-finite gradient norm and were skipped", opt.skipped());
  if (model.conditioner->truncated)
    spdlog::warn("{} captions were longer than conditioner.max_text_tokens and were truncated",
                 model.conditioner->truncated);

  // The final model (EMA weights when EMA is on), written next to the run and swapped in whole.
  std::string out = run.file("model"), tmp = run.file("model.tmp");
  fs::remove_all(tmp);
  with_ema([&] { model.save(tmp); });
  fs::remove_all(out);
  fs::rename(tmp, out);
  GeneratorTrainResult r;
  r.steps = s.steps;
  r.final_loss = last_loss;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.model_dir = out;
  spdlog::info("{} done: {} steps in {:.1f}s, loss {:.4f}; model in {}", s.stage, s.steps, r.seconds, last_loss, out);
  return r;
}

}  // namespace iomm
