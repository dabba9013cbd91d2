// The memory a training run needs on each device, estimated from the config before anything is allocated, so that
// a user can size GPUs from it (printed at the start of every generator run, and by `iomm inspect --config
// --memory`). Counted:
//   trainable parameters, their gradients (fp32 master copies, whatever the compute dtype), the optimizer state
//   (AdamW: 2 fp32 moments; Muon: 1 momentum on its matrices), divided across ranks under ZeRO-1, the EMA (fp32,
//   0 on the device when kept on the CPU), the frozen models as held, and the generator's activations per sample.
// Activations are counted per token and block as the tensors autograd saves (listed in memory_estimate.cpp), at the
// compute dtype's width (bf16 under autocast). On CUDA, SDPA's memory-efficient kernels save O(tokens) per head;
// on the CPU its math path also keeps the scores and probabilities (2 × heads × tokens² per block), counted then.
// Checked on the CPU (2026-12-01, D 256, 2 + 4 blocks, 264 tokens, batch 8 vs 40, max RSS): measured 50.0 MiB per
// sample without and 17.5 MiB with checkpointing, estimated 53.0 and 17.1. With activation checkpointing, each checkpointed block
// keeps only its inputs, and one block's activations exist at a time during its recompute. Not counted: the frozen
// models' transient forward activations, the allocator's fragmentation, CUDA context and workspace (~1-2 GB), and
// the condition path's activations (the LLM at the query positions; small next to the generator's at paper sizes).
#pragma once
#include <cstdint>
#include <string>

namespace iomm {

struct GeneratorConfig;

struct MemoryInputs {
  int64_t trainable_params = 0;   // generator + adapter
  int64_t matrix_params = 0;      // of those, the 2-D hidden weights Muon takes (0 with AdamW)
  std::string optimizer = "adamw";
  int zero1_ranks = 1;            // ZeRO-1: the optimizer state is split over this many ranks
  bool ema = true;
  bool ema_on_cpu = false;
  int64_t frozen_bytes = 0;       // the frozen MLLM as held on the device (the FLUX VAE, ~84M, is left out)
  int activation_bytes = 4;       // 2 under bf16 autocast
  bool attention_scores = false;  // the CPU's attention keeps 2 × heads × tokens² per block
  int64_t checkpoint_every = 0;   // train.activation_checkpointing: every N-th block recomputed (0 = off)
  int64_t image_tokens = 0;       // the generator's tokens per sample
  int64_t context_tokens = 0;     // the condition tokens the generator reads per sample
  int64_t batch = 1;              // per device, per micro-batch
};

struct MemoryEstimate {
  double params = 0, grads = 0, optimizer = 0, ema = 0, frozen = 0;  // bytes
  double activations_per_sample = 0;                                 // bytes
  double activations = 0;                                            // × batch
  double total() const { return params + grads + optimizer + ema + frozen + activations; }
  std::string describe() const;  // one line per part, in GiB
};

// The generator's saved activations for one sample, in elements (× the compute dtype's width = bytes).
double generator_activation_elements(const GeneratorConfig& g, int64_t image_tokens, int64_t context_tokens,
                                     int64_t checkpoint_every, bool attention_scores);

MemoryEstimate estimate_memory(const GeneratorConfig& g, const MemoryInputs& in);

}  // namespace iomm
