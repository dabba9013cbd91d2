// `iomm bench`: the speed of the real training step, of generation, and of one component's forward (and backward),
// with FLOPs counted from the config (model/flops.h), peak memory and, on a GPU, MFU. Timing is steady_clock around
// whole steps, after warm-up, with a device sync on CUDA. The result is a JSON object (docs/benchmarks.md, and the
// PyTorch peer in bench/peer/ reads the same fields); `dump` writes what the peer needs to run the same computation:
// the model at step 0, the batch, and iomm's per-step losses (bench/peer/README.md).
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "models/components.h"

namespace iomm {

class Config;

struct BenchOptions {
  int64_t warmup = 2;          // untimed steps (or calls) first
  int64_t steps = 10;          // timed steps (train, component) or calls (generate)
  int64_t threads = 0;         // torch intra-op threads; 0 = train.threads, else one per core
  double peak_tflops = 989.0;  // the device's dense peak for MFU (H100/H200 SXM bf16); MFU is null on the CPU
  bool perturb = true;         // non-trivial weights instead of adaLN-Zero (so every part shapes the loss)
  std::string dump;            // directory for the peer (empty: none)
  std::string profile;         // a Chrome trace of the timed steps (torch's profiler; scripts/profile_summary.py)
};

struct GenerateBenchOptions {
  int64_t images = 4;
  int64_t steps = 16;
  double cfg_scale = 3.0;
  std::string sampler = "euler";
  double shift = 1.0;
  uint64_t seed = 0;
  std::string model_dir;  // a trained model directory; empty = a fresh model from the config
};

// The training step of `cfg` (a pretrain / finetune config: [model], [generator], [conditioner], [train], [optim];
// [data] is not read, [sample].prompts are the captions) on one synthetic batch of train.batch_size drawn once:
// conditioner with MIM and the RQA, the frozen MLLM with its KV-cached prefix, the generator, the loss, backward,
// AdamW with clipping (constant LR), EMA when train.ema_decay > 0.
nlohmann::json bench_train(Config& cfg, const BenchOptions& o);
// Whole generate() calls: `g.images` prompts ([sample].prompts, cycled) at `g.steps` steps with true CFG.
nlohmann::json bench_generate(Config& cfg, const BenchOptions& o, const GenerateBenchOptions& g);
// One registered component (iomm forward --list) on `inputs`; with `backward`, forward + backward of the sum of
// its floating outputs into every floating input and parameter.
nlohmann::json bench_component(const std::string& name, const ForwardOptions& fo, const TensorMap& inputs,
                               bool backward, const BenchOptions& o);

// The human-readable lines of a result.
std::string format_bench(const nlohmann::json& r);

}  // namespace iomm
