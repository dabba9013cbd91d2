// The one training loop of iomm, shared by the understanding stage and the generator stages (torchtitan's shape: a
// small trainer whose step is composed from parts the stage supplies). Its phases, in order:
//   setup     the stage builds its model and data (its constructor), the loop its optimizer and EMA
//   restore   the newest complete checkpoint (train/checkpoint.h) into parameters, AdamW and EMA state
//   step      grad_accum micro-steps (the stage's forward + backward), then AdamW with clipping and the LR schedule,
//             the stuck-run check, the EMA update
//   log       JSONL windows in RUN/metrics.jsonl and the progress bar;
//   sample    the stage's samples under EMA weights;  checkpoint: crash-safe, every N steps and at the end
//   export    the final model (EMA weights when EMA is on), written beside RUN/model and swapped in whole
// Every random draw of step s comes from the stage's generators seeded by (seed, s, micro), never from state
// carried between steps, so a resumed run continues bit-exactly (CPU, same thread count: docs/checkpoints.md).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include <ATen/core/Generator.h>
#include <nlohmann/json.hpp>

#include "models/weights.h"
#include "train/optimizer.h"

namespace iomm {

class Config;
struct RunDir;

// The largest train.batch_size (per process and micro-batch) any stage accepts: far above what fits anywhere, low
// enough that a typo (1e9) is refused at start instead of failing inside an allocation minutes later.
inline constexpr int64_t kMaxBatchSize = 65536;

struct LoopConfig {
  int64_t steps = 1000, grad_accum = 1;
  uint64_t seed = 0;
  double ema_decay = 0.0;  // 0 = no EMA
  bool ema_on_cpu = false;  // train.ema_device = "cpu": the EMA in host memory (train/optimizer.h)
  int64_t log_every = 10, sample_every = 0, checkpoint_every = 0, keep_last = 2;
  int64_t stop_at = 0;     // checkpoint and stop after this step (a planned interruption; 0 = run to the end)
  int64_t threads = 0;     // torch intra-op threads; 0 = one per core
  int64_t max_skipped_in_a_row = 50;  // stop when this many consecutive steps had a non-finite gradient
  bool deterministic = false;
  OptimConfig optim;

  // train.steps, grad_accum, seed, ema_decay, log_every, sample_every, checkpoint_every, keep_last, stop_at,
  // threads, max_skipped_in_a_row, deterministic, and [optim]. A stage's own defaults come in `defaults`.
  static LoopConfig from_config(Config& cfg, const LoopConfig& defaults);
};

// What one micro-batch reports: its mean loss, its size, and optional named parts averaged per logging window
// (e.g. the generator's loss on image-conditioned vs text-conditioned samples: name -> (sum, count)).
struct MicroStep {
  double loss = 0;
  int64_t samples = 0;
  std::map<std::string, std::pair<double, int64_t>> parts;
};

class TrainStage {
 public:
  virtual ~TrainStage() = default;
  virtual std::string name() const = 0;  // "pretrain", "finetune", "understanding": logs and progress
  virtual NamedTensors parameters() = 0;  // trainable, by checkpoint name
  virtual void set_training(bool on) = 0;
  // Samples per micro-batch on one process (0: not stated); with grad_accum and the ranks, the global batch a
  // checkpoint records, so that a resume on another world size can say when it changed.
  virtual int64_t micro_batch() const { return 0; }
  // Forward and backward of micro-batch `micro` of optimizer step `step`; the loss is multiplied by `scale`
  // (1 / grad_accum) before backward.
  virtual MicroStep micro_step(int64_t step, int64_t micro, double scale) = 0;
  virtual void write_samples(const std::string& dir, int64_t step) {}  // under EMA weights
  virtual void export_model(const std::string& dir) = 0;              // the final model (EMA weights)
  // The data position a checkpoint records (null: none), and its restore on --resume (`where`: the checkpoint).
  virtual nlohmann::json data_state() const { return nullptr; }
  virtual void restore_data_state(const nlohmann::json& state, const std::string& where) {}
  // Fields added to every metrics.jsonl row (null: none), e.g. skipped samples by cause.
  virtual nlohmann::json data_metrics() const { return nullptr; }
  // What the run uses but does not train (the frozen MLLM's identity, model/mllm_identity.h), recorded in every
  // checkpoint; on --resume check_frozen fails naming what changed (`recorded` is null for older checkpoints).
  virtual nlohmann::json frozen() const { return nullptr; }
  virtual void check_frozen(const nlohmann::json& recorded, const std::string& where) const {}
};

struct LoopResult {
  int64_t steps = 0;       // optimizer steps done
  bool finished = false;   // false when train.stop_at stopped the run (continue with --resume)
  double final_loss = 0;   // mean loss over the last logging window
  double seconds = 0;
  std::string model_dir;   // RUN/model when finished
};

class DataParallel;

// `dp`: the data-parallel group when the job has several processes (train/data_parallel.h), else null.
LoopResult run_training(TrainStage& stage, const LoopConfig& c, const RunDir& run, bool resume,
                        DataParallel* dp = nullptr);

// Deterministic mode and the intra-op thread count of `c`; run_training calls it too, stages call it before they
// build their model so that set-up runs under the same settings.
void apply_process_settings(const LoopConfig& c);

// A generator for (seed, step, stream): every random draw of a step depends on nothing else.
at::Generator step_generator(uint64_t seed, int64_t step, int64_t stream);

}  // namespace iomm
