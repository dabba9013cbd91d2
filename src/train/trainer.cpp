#include "train/trainer.h"

#include <chrono>
#include <filesystem>
#include <optional>
#include <thread>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/metrics.h"
#include "core/progress.h"
#include "core/run_dir.h"
#include "train/checkpoint.h"
#include "train/data_parallel.h"
#include "train/determinism.h"

namespace iomm {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

LoopConfig LoopConfig::from_config(Config& cfg, const LoopConfig& d) {
  LoopConfig c = d;
  c.steps = cfg.get_int("train.steps", d.steps, 1);
  c.grad_accum = cfg.get_int("train.grad_accum", d.grad_accum, 1);
  c.seed = uint64_t(cfg.get_int("train.seed", int64_t(d.seed), 0));
  c.ema_decay = cfg.get_double("train.ema_decay", d.ema_decay, 0.0, 0.999999);
  c.ema_on_cpu = cfg.get_choice("train.ema_device", d.ema_on_cpu ? "cpu" : "model", {"model", "cpu"}) == "cpu";
  c.log_every = cfg.get_int("train.log_every", d.log_every, 1);
  c.sample_every = cfg.get_int("train.sample_every", d.sample_every, 0);
  c.checkpoint_every = cfg.get_int("train.checkpoint_every", d.checkpoint_every, 0);
  c.keep_last = cfg.get_int("train.keep_last", d.keep_last, 1);
  c.stop_at = cfg.get_int("train.stop_at", d.stop_at, 0);
  c.threads = cfg.get_int("train.threads", d.threads, 0, 1024);
  c.max_skipped_in_a_row = cfg.get_int("train.max_skipped_in_a_row", d.max_skipped_in_a_row, 1);
  c.deterministic = cfg.get_bool("train.deterministic", d.deterministic);
  c.optim = OptimConfig::from_config(cfg, "optim", c.steps);
  return c;
}

at::Generator step_generator(uint64_t seed, int64_t step, int64_t stream) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ULL ^ (uint64_t(step) * 0xBF58476D1CE4E5B9ULL) ^
               (uint64_t(stream) * 0x94D049BB133111EBULL);
  x ^= x >> 31;
  return at::make_generator<at::CPUGeneratorImpl>(x);
}

namespace {

// The optimizer-side state of a run: what a checkpoint holds besides the step.
struct LoopState {
  NamedTensors params;
  Optimizer opt;
  std::optional<Ema> ema;

  DataParallel* dp = nullptr;  // null: one process
  std::vector<int> owners;     // ZeRO-1: the rank that updates each parameter (empty: all update all)

  LoopState(NamedTensors p, const LoopConfig& c, DataParallel* d) : params(std::move(p)), opt(params, c.optim), dp(d) {
    if (c.ema_decay > 0) ema.emplace(params, c.ema_decay, c.ema_on_cpu);
    if (dp && dp->zero1()) {
      owners = dp->owners(params);
      std::vector<bool> owned;
      for (int o : owners) owned.push_back(o == dp->rank());
      opt.shard(owned);
    }
    if (dp && dp->overlaps()) dp->attach_gradient_hooks(params);
  }
  bool main() const { return !dp || dp->rank() == 0; }

  // The whole optimizer state on rank 0 (ZeRO-1 gathers each parameter's from its owner); the others get {}.
  std::map<std::string, at::Tensor> optimizer_state() const {
    if (owners.empty()) return opt.state();
    std::map<std::string, at::Tensor> out;
    for (size_t i = 0; i < params.size(); ++i) {
      auto entries = opt.state_of(i);
      NamedTensors ts(entries.begin(), entries.end());
      dp->broadcast_parameters(ts, owners[i]);
      if (main())
        for (auto& [k, t] : entries) out[k] = t;
    }
    return out;
  }

  // Runs `fn` with the EMA weights swapped in (sampling, export), then puts the trained weights back.
  template <class Fn>
  void with_ema(Fn&& fn) {
    if (!ema) return fn();
    std::vector<at::Tensor> backup;
    for (auto& [n, p] : params) backup.push_back(p.detach().clone());
    ema->copy_to(params);
    fn();
    torch::NoGradGuard ng;
    for (size_t i = 0; i < params.size(); ++i) params[i].second.copy_(backup[i]);
  }
};

int64_t global_batch(const LoopState& st, const LoopConfig& c, const TrainStage& stage) {
  return stage.micro_batch() * c.grad_accum * (st.dp ? st.dp->world_size() : 1);
}

// A resume may change the world size; the global batch (batch_size × grad_accum × ranks) should stay, or the run
// continues with other samples per step than it was started with. Said, not refused: it can be on purpose.
void check_global_batch(const nlohmann::json& state, int64_t now, const std::string& dir) {
  const int64_t was = state.value("global_batch", int64_t(0));
  if (was > 0 && now > 0 && was != now)
    spdlog::warn("{} was written at a global batch of {} samples per step, this run has {} (train.batch_size × "
                 "train.grad_accum × ranks): from here the steps draw other samples; to continue the same run, set "
                 "train.batch_size so that the product is {}",
                 dir, was, now, was);
}

// Every rank takes part (the data positions and ZeRO-1 shards are gathered); rank 0 writes.
void save(const LoopState& st, const LoopConfig& c, const TrainStage& stage, const RunDir& run, int64_t step) {
  auto data = st.dp ? combine_data_states(st.dp->gather_strings(stage.data_state().dump())) : stage.data_state();
  auto optimizer = st.optimizer_state();
  if (!st.main()) return;
  TrainCheckpoint ck;
  ck.step = step;
  for (auto& [n, p] : st.params) ck.files["model"][n] = p.detach();
  ck.files["optimizer"] = std::move(optimizer);
  if (st.ema) ck.files["ema"] = st.ema->tensors();
  ck.state = {{"step", step}, {"stage", stage.name()}, {"seed", c.seed}, {"determinism", determinism_fingerprint()}};
  if (st.dp) ck.state["world_size"] = st.dp->world_size();
  if (auto g = global_batch(st, c, stage); g > 0) ck.state["global_batch"] = g;
  if (!data.is_null()) ck.state["data"] = data;
  if (auto f = stage.frozen(); !f.is_null()) ck.state["frozen"] = f;
  save_checkpoint(run.path, ck, int(c.keep_last));
}

// Returns the step to continue from: that of the newest complete checkpoint, or 0.
int64_t restore(LoopState& st, TrainStage& stage, const LoopConfig& c, const RunDir& run) {
  auto dir = latest_checkpoint(run.path);
  if (!dir) {
    spdlog::info("--resume: no complete checkpoint in {}; starting at step 0", run.path);
    return 0;
  }
  auto ck = load_checkpoint(*dir);
  stage.check_frozen(ck.state.value("frozen", nlohmann::json()), *dir);
  torch::NoGradGuard ng;
  const auto& w = ck.files.at("model");
  for (auto& [name, p] : st.params) {
    auto it = w.find(name);
    if (it == w.end()) fail("{}: model.safetensors has no tensor {}; the run's model changed", *dir, name);
    p.copy_(it->second);
  }
  st.opt.load_state(ck.files.at("optimizer"), *dir + "/optimizer.safetensors");
  if (st.ema) {
    if (!ck.files.count("ema"))
      fail("{} has no ema.safetensors but train.ema_decay = {}: the run was started without EMA; resume with "
           "--set train.ema_decay=0, or start a new run",
           *dir, c.ema_decay);
    st.ema->load(ck.files.at("ema"), *dir + "/ema.safetensors");
  }
  if (ck.state.contains("determinism")) warn_determinism_mismatches(ck.state["determinism"], *dir);
  check_global_batch(ck.state, global_batch(st, c, stage), *dir);
  auto data = ck.state.value("data", nlohmann::json());
  if (st.dp) data = data_state_for_rank(data, st.dp->rank(), st.dp->world_size(), *dir);
  stage.restore_data_state(data, *dir);
  spdlog::info("resumed from {} at step {} (written by {} process(es), continuing on {})", *dir, ck.step,
               ck.state.value("world_size", 1), st.dp ? st.dp->world_size() : 1);
  return ck.step;
}

// Sums of a logging window.
struct Window {
  double loss = 0;
  int64_t steps = 0, samples = 0;
  std::map<std::string, std::pair<double, int64_t>> parts;
  Clock::time_point t0 = Clock::now();

  void add(const MicroStep& m) {
    samples += m.samples;
    for (auto& [k, v] : m.parts) parts[k].first += v.first, parts[k].second += v.second;
  }
  // The window of the whole job: samples and the parts summed over ranks (the loss is already the global mean).
  // The parts' keys must be the same on every rank (the stages report each key on every step).
  void reduce(DataParallel& dp) {
    std::vector<double> v = {double(samples)};
    for (auto& [k, p] : parts) v.push_back(p.first), v.push_back(double(p.second));
    dp.sum(v);
    samples = int64_t(v[0]);
    size_t i = 1;
    for (auto& [k, p] : parts) p.first = v[i++], p.second = int64_t(v[i++]);
  }
  nlohmann::json record(int64_t done, double grad_norm, double lr, int64_t skipped) const {
    double dt = std::max(std::chrono::duration<double>(Clock::now() - t0).count(), 1e-9);
    nlohmann::json r = {{"step", done}, {"loss", loss / double(steps)}, {"grad_norm", grad_norm}, {"lr", lr},
                        {"samples_per_s", double(samples) / dt}, {"steps_per_s", double(steps) / dt},
                        {"skipped_steps", skipped}};
    for (auto& [k, v] : parts)
      if (v.second) r[k] = v.first / double(v.second);
    return r;
  }
};

// One optimizer step: the micro-batches, AdamW, the stuck check, EMA. Returns (loss, grad norm).
std::pair<double, double> optimizer_step(TrainStage& stage, LoopState& st, const LoopConfig& c, const RunDir& run,
                                         int64_t step, Window& w) {
  double loss = 0;
  for (int64_t micro = 0; micro < c.grad_accum; ++micro) {
    if (st.dp && st.dp->overlaps() && micro == c.grad_accum - 1) st.dp->begin_sync();  // its backward communicates
    auto m = stage.micro_step(step, micro, 1.0 / double(c.grad_accum));
    loss += m.loss / double(c.grad_accum);
    w.add(m);
  }
  if (st.dp) {  // once per optimizer step, however many micro-batches it accumulated
    if (st.dp->overlaps()) st.dp->finish_gradients();
    else st.dp->average_gradients(st.params);
    loss = st.dp->mean(loss);
  }
  double gn = st.opt.step(step);
  if (!st.owners.empty()) st.dp->broadcast_from_owners(st.params, st.owners);
  st.opt.fail_if_stuck(c.max_skipped_in_a_row, stage.name(), step + 1, run.file("checkpoints"));
  if (st.ema) st.ema->update(st.params, st.ema->warmup_decay(step));
  return {loss, gn};
}

// A checkpoint's size before one exists: the weights, fp32 EMA, two fp32 optimizer moments per weight (AdamW's;
// Muon keeps one, so this errs on the large side).
uint64_t estimated_checkpoint_bytes(const LoopState& st) {
  uint64_t n = 0;
  for (const auto& [name, p] : st.params) {
    const uint64_t numel = uint64_t(p.numel());
    n += numel * uint64_t(p.element_size()) + 2 * numel * 4 + (st.ema ? numel * 4 : 0) + 3 * (name.size() + 128);
  }
  return n;
}

void export_final(TrainStage& stage, LoopState& st, const RunDir& run) {
  std::string out = run.file("model"), tmp = run.file("model.tmp");
  fs::remove_all(tmp);
  st.with_ema([&] { stage.export_model(tmp); });
  fs::remove_all(out);
  fs::rename(tmp, out);
}

}  // namespace

void apply_process_settings(const LoopConfig& c) {
  if (c.deterministic) set_deterministic(true);
  // Explicit, because an earlier stage in the same process may have changed it.
  at::set_num_threads(int(c.threads > 0 ? c.threads : std::max(1u, std::thread::hardware_concurrency())));
}

// One logging window's row: written by rank 0, with every rank's samples, parts and skip counts.
void log_window(Window& w, LoopState& st, TrainStage& stage, std::optional<MetricsWriter>& metrics,
                const LoopConfig& c, int64_t step, double gn) {
  auto data = stage.data_metrics();
  if (st.dp) {
    w.reduce(*st.dp);
    data = combine_data_metrics(st.dp->gather_strings(data.dump()));
  }
  if (!metrics) return;
  auto row = w.record(step + 1, gn, lr_at(c.optim, step), st.opt.skipped());
  if (data.is_object()) row.update(data);
  metrics->write(row);
}

LoopResult run_training(TrainStage& stage, const LoopConfig& c, const RunDir& run, bool resume, DataParallel* dp) {
  auto t0 = Clock::now();
  apply_process_settings(c);
  LoopState st(stage.parameters(), c, dp);
  int64_t start = resume ? restore(st, stage, c, run) : 0;
  if (dp) dp->broadcast_parameters(st.params);  // one set of weights, whatever each rank initialised or read
  std::optional<MetricsWriter> metrics;
  std::optional<ProgressBar> bar;
  if (st.main()) {
    // Rows past the checkpoint are redone below: without this, metrics.jsonl would hold those steps twice.
    if (resume && start > 0) drop_rows_after_step(run.file("metrics.jsonl"), start);
    metrics.emplace(run.file("metrics.jsonl"), resume && start > 0);
    bar.emplace(c.steps, stage.name(), "step");
    bar->update(start);
  }
  const int64_t end = c.stop_at > 0 ? std::min(c.stop_at, c.steps) : c.steps;
  const int64_t saves_left = (c.checkpoint_every > 0 ? (end - start) / c.checkpoint_every : 0) + 1;
  check_checkpoint_space(run.path, estimated_checkpoint_bytes(st), int(c.keep_last), saves_left);
  Window w;
  LoopResult r;
  stage.set_training(true);
  for (int64_t step = start; step < end; ++step) {
    auto [loss, gn] = optimizer_step(stage, st, c, run, step, w);
    w.loss += loss;
    ++w.steps;
    if (bar) bar->update(1, fmt::format("loss={:.4f}", loss));
    int64_t done = step + 1;
    if (done % c.log_every == 0 || done == c.steps) {
      log_window(w, st, stage, metrics, c, step, gn);
      r.final_loss = w.loss / double(w.steps);
      w = Window{};
    }
    if (st.main() && c.sample_every > 0 && (done % c.sample_every == 0 || done == c.steps)) {
      st.with_ema([&] { stage.write_samples(run.file("samples"), done); });
      stage.set_training(true);  // sampling switched to eval
    }
    if (c.checkpoint_every > 0 && done % c.checkpoint_every == 0 && done != end) save(st, c, stage, run, done);
  }
  if (bar) bar->finish();
  r.steps = std::max(start, end);
  save(st, c, stage, run, r.steps);
  if (st.opt.skipped()) spdlog::warn("{} steps had a non-finite gradient norm and were skipped", st.opt.skipped());
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (end < c.steps) {
    spdlog::info("{}: stopped at step {} of {} (train.stop_at); continue with --resume", stage.name(), end, c.steps);
    return r;
  }
  if (st.main()) {
    export_final(stage, st, run);
    r.model_dir = run.file("model");
  }
  r.finished = true;
  spdlog::info("{} done: {} steps in {:.1f}s, loss {:.4f}{}", stage.name(), c.steps, r.seconds, r.final_loss,
               r.model_dir.empty() ? "" : "; model in " + r.model_dir);
  return r;
}

}  // namespace iomm
