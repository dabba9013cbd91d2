#include "train/generator_trainer.h"

#include <filesystem>
#include <thread>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/run_dir.h"
#include "data/image.h"
#include "model/iomm_model.h"
#include "model/mllm_identity.h"
#include "model/model_dir.h"
#include "models/mmdit.h"  // pack_latents
#include "report/image_grid.h"  // iomm::report
#include "train/data_parallel.h"
#include "models/hf_config.h"  // dtype_from_name
#include "train/memory_estimate.h"
#include "train/optimizer.h"  // is_muon_parameter
#include "train/mixed_precision.h"
#include "train/trainer.h"
#include "train/training_data.h"

namespace iomm {

namespace fs = std::filesystem;

namespace {

// The generator stage's own settings; the loop's (steps, accumulation, EMA, logging, checkpoints) are LoopConfig.
struct StageSettings {
  std::string stage, data;
  double mix_ratio = 0.5;
  TrainingDataSettings data_settings;  // [data]
  int64_t batch_size = 32;
  int64_t activation_checkpointing = 0;  // every N-th generator block recomputed in backward (0 = off)
  std::string autocast = "none";         // train.autocast (train/mixed_precision.h)
  double cfg_drop = 0.1;
  bool cfg_drop_images = true;
  TimestepSampling timesteps;
  GenerateOptions sample;
  std::vector<std::string> sample_prompts;
  int64_t sample_count = 8;
};

}  // namespace

std::string generator_stage(Config& cfg) {
  if (!cfg.has("train.stage"))
    fail("{}: train.stage is not set; the generator stages are pretrain (stage 1, image-only pre-training) and "
         "finetune (stage 2, mixed fine-tuning with train.init_from = the stage-1 run)",
         cfg.source());
  return cfg.get_choice("train.stage", "", {"pretrain", "finetune"});
}

std::string train_data(Config& cfg) {
  auto stage = generator_stage(cfg);
  return cfg.get_choice("train.data", stage == "pretrain" ? "image" : "mix", {"image", "pair", "mix"});
}

namespace {

StageSettings read_settings(Config& cfg, const std::string& model_dtype) {
  StageSettings s;
  s.autocast = autocast_from_config(cfg, model_dtype);
  s.stage = generator_stage(cfg);
  s.data = train_data(cfg);
  s.mix_ratio = cfg.get_double("train.mix_ratio", s.mix_ratio, 0.0, 1.0);
  s.data_settings = TrainingDataSettings::from_config(cfg, s.data);
  s.batch_size = cfg.get_int("train.batch_size", s.batch_size, 1, kMaxBatchSize);
  s.activation_checkpointing = cfg.get_int("train.activation_checkpointing", 0, 0);
  s.cfg_drop = cfg.get_double("train.cfg_drop", s.cfg_drop, 0.0, 1.0);
  s.cfg_drop_images = cfg.get_bool("train.cfg_drop_images", s.cfg_drop_images);
  s.timesteps = TimestepSampling::from_config(cfg, "train.timesteps");
  s.sample.steps = cfg.get_int("sample.steps", s.sample.steps, 1);
  s.sample.cfg_scale = cfg.get_double("sample.cfg_scale", s.sample.cfg_scale, 0.0);
  s.sample.sampler = cfg.get_choice("sample.sampler", s.sample.sampler, {"euler", "dpmpp_2m"});
  s.sample.shift = cfg.get_double("sample.shift", s.sample.shift, 1e-3);
  s.sample.seed = uint64_t(cfg.get_int("sample.seed", 0, 0));
  s.sample_prompts = cfg.get_string_list("sample.prompts", {});
  s.sample_count = cfg.get_int("sample.count", s.sample_count, 1, 64);
  return s;
}

struct Batch {
  TrainingBatch batch;
  std::vector<bool> is_image;  // self-conditioned sample (before CFG dropout)
};

// Micro-batch `micro` of rank r of W holds samples [(micro·W + r)·B, +B) of the step's global batch. Each sample
// draws everything random about it (its kind, CFG dropout, which image for the memory pools, its MIM mask, t and
// noise) from its own generator (seed, step, global index), so how a global batch is split across processes and
// micro-batches changes only who computes a sample, never what it is: 2 ranks × B equals 1 rank × 2B.
int64_t first_sample(const TrainingDataSettings& d, int64_t batch, int64_t micro) {
  return (micro * d.world_size + d.rank) * batch;
}

Batch draw_batch(const StageSettings& s, const IommModel& m, TrainingData& data, uint64_t seed, int64_t step,
                 int64_t first) {
  Batch b;
  std::vector<TrainingImage> taken;
  std::vector<SampleNoise> noise;
  for (int64_t j = first; j < first + s.batch_size; ++j) {
    auto gen = step_generator(seed, step, j);
    auto u = torch::rand({2}, gen);
    auto a = u.accessor<float, 1>();
    bool image = s.data == "image" || (s.data == "mix" && a[0] < s.mix_ratio);
    bool drop = a[1] < s.cfg_drop && (!image || s.cfg_drop_images);
    auto x = data.take(image, gen);
    ConditionInput c = image ? ConditionInput{ConditionKind::image, "", x.image}
                             : ConditionInput{ConditionKind::text, x.caption, {}};
    if (drop) c = {ConditionKind::uncond, "", {}};
    noise.push_back(m.draw_sample_noise(c.kind == ConditionKind::image, s.timesteps, gen));
    taken.push_back(std::move(x));
    b.batch.conds.push_back(c);
    b.is_image.push_back(image);
  }
  b.batch = training_batch(taken, std::move(b.batch.conds));  // images, or cached features (training_data.h)
  set_batch_noise(b.batch, noise);
  return b;
}

// A feature cache holds no pixels: the grids' input column is its latents decoded by the autoencoder, float
// [n, 3, R, R] in [-1, 1] (the reconstruction the generator could at best reach).
at::Tensor decoded_latents(IommModel& m, const std::vector<data::FeatureSample>& cached) {
  std::vector<at::Tensor> latents;
  for (const auto& f : cached) latents.push_back(f.latents);
  auto tokens = pack_latents(torch::stack(latents), m.config().generator.patch_size());
  tokens = tokens.to(torch::Device(m.config().device));
  return m.decode_preview(tokens).to(torch::kCPU, torch::kFloat) * 2 - 1;
}

// Sample grids: t2i for the sample prompts, and input | reconstruction pairs from unmasked self-conditioning (from
// a feature cache: decoded cached latents | the reconstruction from the cached c_img).
void write_samples(IommModel& m, const StageSettings& s, TrainingData& data, const std::string& dir, int64_t step) {
  fs::create_directories(dir);
  auto stem = fmt::format("{}/step-{:08d}", dir, step);
  if (!s.sample_prompts.empty()) {
    std::vector<ConditionInput> conds;
    for (auto& p : s.sample_prompts) conds.push_back({ConditionKind::text, p, {}});
    auto imgs = m.generate(conds, s.sample);
    report::write_image_grid((imgs + 1) / 2, stem + "-t2i.png", std::min<int64_t>(8, int64_t(conds.size())), 4, 2);
  }
  auto cached = data.preview_features(s.sample_count);
  auto inputs = cached.empty() ? data.preview_images(s.sample_count) : decoded_latents(m, cached);
  int64_t n = inputs.size(0);
  std::vector<ConditionInput> conds;
  for (int64_t i = 0; i < n; ++i) {
    conds.push_back({ConditionKind::image, "", cached.empty() ? inputs[i] : at::Tensor()});
    if (!cached.empty()) conds.back().image_tokens = cached[size_t(i)].c_img;  // unmasked, as at inference
  }
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

// The generator stage: the IOMM objective on a batch drawn by the step's generator from the training data.
class GeneratorStage : public TrainStage {
 public:
  GeneratorStage(IommModel model, StageSettings s, std::unique_ptr<TrainingData> data, uint64_t seed,
                 nlohmann::json mllm)
      : model_(std::move(model)), s_(std::move(s)), data_(std::move(data)), seed_(seed), mllm_(std::move(mllm)) {}

  std::string name() const override { return s_.stage; }
  NamedTensors parameters() override { return model_.trainable(); }
  void set_training(bool on) override { model_.set_training(on); }
  int64_t micro_batch() const override { return s_.batch_size; }

  MicroStep micro_step(int64_t step, int64_t micro, double scale) override {
    auto b = draw_batch(s_, model_, *data_, seed_, step, first_sample(s_.data_settings, s_.batch_size, micro));
    auto gen = step_generator(seed_, step, -1);  // unused: the batch carries every draw
    FlowLoss fl;
    {
      AutocastScope autocast(model_.config().device, s_.autocast);  // the forward only; backward follows its casts
      fl = model_.loss(b.batch, s_.timesteps, gen);
    }
    (fl.loss * scale).backward();
    MicroStep m;
    m.parts = {{"loss_image", {0.0, 0}}, {"loss_text", {0.0, 0}}};  // the same keys on every rank, to reduce
    m.loss = fl.loss.item<double>();
    m.samples = int64_t(b.is_image.size());
    auto per_sample = fl.per_sample.to(torch::kCPU, torch::kDouble);
    auto per = per_sample.accessor<double, 1>();
    for (size_t i = 0; i < b.is_image.size(); ++i) {
      auto& part = m.parts[b.is_image[i] ? "loss_image" : "loss_text"];
      part.first += per[int64_t(i)];
      ++part.second;
    }
    return m;
  }
  void write_samples(const std::string& dir, int64_t step) override {
    iomm::write_samples(model_, s_, *data_, dir, step);
  }
  void export_model(const std::string& dir) override {
    model_.save(dir);
    write_file_atomic(dir + "/" + kMllmRecord, mllm_.dump(2) + "\n");  // checked when stage 2 starts from it
  }
  nlohmann::json frozen() const override { return {{"mllm", mllm_}}; }
  void check_frozen(const nlohmann::json& recorded, const std::string& where) const override {
    if (recorded.contains("mllm")) return check_same_mllm(recorded["mllm"], mllm_, "checkpoint " + where);
    spdlog::warn("{} records no MLLM identity (an older iomm wrote it): model.mllm = '{}' is not checked", where,
                 mllm_.value("path", ""));
  }
  nlohmann::json data_state() const override { return data_->state(); }
  void restore_data_state(const nlohmann::json& st, const std::string& where) override { data_->restore(st, where); }
  nlohmann::json data_metrics() const override { return data_->metrics(); }
  const IommModel& model() const { return model_; }
  const TrainingData& data() const { return *data_; }

 private:
  IommModel model_;
  StageSettings s_;
  std::unique_ptr<TrainingData> data_;
  uint64_t seed_;
  nlohmann::json mllm_;  // mllm_identity(model.mllm)
};

// Decode workers and torch's intra-op threads share the cores: with train.threads unset, the intra-op pool gets
// the cores the workers leave (OpenMP threads that share a core with a busy worker spin and yield, and a 2-core
// step ran 25x slower so). Workers wait on a condition variable when they are ahead, so they cost nothing idle.
// Ranks on one node share its cores too: each gets cores / (ranks per node).
void budget_threads(LoopConfig& loop, const TrainingDataSettings& d, int ranks_per_node) {
  if (loop.threads > 0 || (d.loader != "stream" && ranks_per_node == 1)) return;
  const int cores = std::max(1, int(std::thread::hardware_concurrency()) / ranks_per_node);
  loop.threads = std::max(1, cores - (d.loader == "stream" ? d.workers : 0));
  spdlog::info("threads: {} intra-op + {} data workers on {} cores per process (set train.threads to override)",
               loop.threads, d.loader == "stream" ? d.workers : 0, cores);
}

// The run directory of every rank: rank 0 opens it (refusing to overwrite a run) and writes config and log.txt;
// the others open it after rank 0 has, and log to log-rank-N.txt.
RunDir open_run(const std::string& path, bool resume, DataParallel* dp) {
  if (!dp) {
    auto run = RunDir::open(path, resume);
    run.attach_log();
    return run;
  }
  RunDir run{path};
  if (dp->rank() == 0) run = RunDir::open(path, resume);
  dp->barrier();
  if (dp->rank() != 0) run = RunDir::open(path, /*resume=*/true);
  run.attach_log(dp->rank() == 0 ? "log.txt" : fmt::format("log-rank-{}.txt", dp->rank()));
  return run;
}

// What a device will hold (train/memory_estimate.h), logged before the first step so that a run that cannot fit
// says so up front, and so that users can size GPUs from a short run on a small one.
MemoryEstimate memory_estimate(const IommModel& m, const StageSettings& s, const LoopConfig& loop, int zero1_ranks) {
  const auto& mc = m.config();
  MemoryInputs in;
  in.trainable_params = m.generator_parameters() + m.adapter_parameters();
  for (const auto& [name, p] : m.trainable())
    if (is_muon_parameter(name, p)) in.matrix_params += p.numel();
  if (loop.optim.name != "muon") in.matrix_params = 0;
  in.optimizer = loop.optim.name;
  in.zero1_ranks = zero1_ranks;
  in.ema = loop.ema_decay > 0;
  in.ema_on_cpu = loop.ema_on_cpu;
  for (const auto& p : m.conditioner().mllm->parameters()) in.frozen_bytes += p.numel() * int64_t(p.element_size());
  in.activation_bytes = s.autocast != "none" ? 2 : int(c10::elementSize(dtype_from_name(mc.dtype)));
  in.checkpoint_every = s.activation_checkpointing;
  in.attention_scores = mc.device == "cpu";
  in.image_tokens = m.image_seq_len();
  const auto& cc = mc.conditioner;
  in.context_tokens = cc.rqa.num_queries;
  if (cc.cond_tokens == "all")  // the longer of an image condition's prefix and a caption's, plus the queries
    in.context_tokens += std::max(m.conditioner().image_tokens_per_image(), cc.templates.max_text_tokens) + 32;
  in.batch = s.batch_size;
  return estimate_memory(mc.generator, in);
}

// The generator's input width comes from stage 1 (its iomm.toml records generator.in_channels, which wins over
// latent_channels: that key only sets in_channels' default). A different generator.latent_channels for stage 2 was
// recorded in config.toml and ignored; refused instead.
void check_latent_channels_kept(Config stage1, Config user_cfg, const std::string& dir) {
  if (!user_cfg.has("generator.latent_channels")) return;
  const int64_t want = user_cfg.get_int("generator.latent_channels", 0);
  int64_t have = stage1.get_int("generator.latent_channels", want);
  if (stage1.get_string("generator.arch", "mmdit") != "zimage" && stage1.has("generator.in_channels")) {
    const int64_t patch = stage1.get_int("generator.patch_size", 2);
    have = stage1.get_int("generator.in_channels", 0) / std::max<int64_t>(1, patch * patch);
  }
  if (want != have)
    fail("generator.latent_channels = {} but the stage-1 model in train.init_from ('{}/iomm.toml') has {} latent "
         "channels, and stage 2 continues its generator; remove generator.latent_channels from the stage-2 config "
         "(or set it to {}), or train a new stage 1 with {}",
         want, dir, have, have, want);
}

// Stage 2 starts from stage 1: that model's config is the base, the user's config goes on top.
Config stage_config(Config& user_cfg, std::string& init_from) {
  init_from = user_cfg.has("train.init_from") ? user_cfg.get_string("train.init_from", "") : "";
  if (init_from.empty()) return user_cfg;
  init_from = resolve_model_dir(init_from);
  Config cfg = load_model_toml(init_from);
  check_latent_channels_kept(cfg, user_cfg, init_from);
  cfg.merge(user_cfg);
  cfg.get_string("train.init_from", "");
  return cfg;
}

// Stage 2's MLLM must be the one stage 1's adapter learned (model/mllm_identity.h).
void check_stage1_mllm(const std::string& init_from, const nlohmann::json& mllm) {
  const std::string record = init_from + "/" + kMllmRecord;
  if (!fs::exists(record)) {
    spdlog::warn("{} is missing (a model exported by an older iomm): the frozen MLLM model.mllm = '{}' cannot be "
                 "checked against the one stage 1 was trained with", record, mllm.value("path", ""));
    return;
  }
  auto recorded = nlohmann::json::parse(read_file(record), nullptr, /*allow_exceptions=*/false);
  if (!recorded.is_object())
    fail("{}: not a JSON object; restore it from the stage-1 run (training writes it with the model)", record);
  check_same_mllm(recorded, mllm, "the stage-1 model '" + init_from + "'");
}

// Everything a generator stage reads from its config; unknown keys are refused.
struct ParsedStage {
  IommModelConfig mc;
  StageSettings s;
  LoopConfig loop;
  ParallelConfig pc;
};

ParsedStage parse_stage(Config& cfg) {
  ParsedStage p;
  p.mc = IommModelConfig::from_config(cfg);
  p.s = read_settings(cfg, p.mc.dtype);
  p.loop = LoopConfig::from_config(cfg, LoopConfig{});
  p.pc = ParallelConfig::from_config(cfg);
  cfg.check_unused();
  return p;
}

}  // namespace

void check_generator_config(Config cfg) {
  std::string init_from;
  Config merged = stage_config(cfg, init_from);
  parse_stage(merged);
}

GeneratorTrainResult train_generator(Config& user_cfg, const std::string& run_path, bool resume) {
  std::string init_from;
  Config cfg = stage_config(user_cfg, init_from);
  auto parsed = parse_stage(cfg);
  auto& mc = parsed.mc;
  auto& s = parsed.s;
  auto& loop = parsed.loop;
  auto& pc = parsed.pc;
  auto dp = DataParallel::from_environment(mc.device, pc);
  if (dp) s.data_settings.rank = dp->rank(), s.data_settings.world_size = dp->world_size();
  auto run = open_run(run_path, resume, dp.get());
  if (dp) spdlog::info("data parallel: {}", dp->describe());
  budget_threads(loop, s.data_settings, dp ? dp->local_world_size() : 1);  // logged into the run's log
  if (!dp || dp->rank() == 0) run.write_config(cfg);
  apply_process_settings(loop);

  auto mllm = mllm_identity(mc.mllm);
  if (!init_from.empty()) check_stage1_mllm(init_from, mllm);
  auto model = IommModel::create(mc, loop.seed);
  if (!init_from.empty()) {
    model.load_weights_from(init_from);
    spdlog::info("{}: initialised from {}", s.stage, init_from);
  }
  model.set_activation_checkpointing(s.activation_checkpointing);
  spdlog::info("{}", memory_estimate(model, s, loop, dp && pc.zero1 ? dp->world_size() : 1).describe());
  std::optional<data::FeatureFingerprints> fingerprints;  // what a feature cache must have been made with
  if (s.data_settings.cached) fingerprints = model.feature_fingerprints();
  auto data = open_training_data(s.data_settings, int(mc.resolution), loop.seed, fingerprints);
  spdlog::info("data: {}", data->summary());
  const int world = dp ? dp->world_size() : 1;
  spdlog::info("{} ({} data, mix_ratio {}): {} steps × {} × {} accumulation × {} rank(s) = global batch {}; "
               "trainable {:.2f}M (generator {:.2f}M, adapter {:.2f}M)",
               s.stage, s.data, s.mix_ratio, loop.steps, s.batch_size, loop.grad_accum, world,
               s.batch_size * loop.grad_accum * world,
               double(model.generator_parameters() + model.adapter_parameters()) / 1e6,
               double(model.generator_parameters()) / 1e6, double(model.adapter_parameters()) / 1e6);
  GeneratorStage stage(std::move(model), s, std::move(data), loop.seed, std::move(mllm));
  auto lr = run_training(stage, loop, run, resume, dp.get());
  spdlog::info("data at the end: {}", stage.data().summary());
  if (stage.model().truncated_captions())
    spdlog::warn("{} captions were longer than conditioner.max_text_tokens and were truncated",
                 stage.model().truncated_captions());
  GeneratorTrainResult r;
  r.steps = lr.steps;
  r.final_loss = lr.final_loss;
  r.seconds = lr.seconds;
  r.model_dir = lr.model_dir;
  return r;
}

}  // namespace iomm
