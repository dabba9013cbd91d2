// Saved-tensor counts per token of one block (D = width, F = MLP hidden), read off the blocks' forward passes:
//   MM-DiT double block, per stream: norm input, modulated input, q, k, v, q and k after QK-norm + RoPE, attention
//     output, projection output, second norm input, its modulated input (11 D); fc1 output and GELU output (2 F).
//   MM-DiT single block: modulated input, linear1 output (3 D + F), q and k after QK-norm + RoPE, attention output,
//     block input, norm input (1 + 3 + 2 + 1 + 1 + 1 = 9 D, F); GELU output, linear2 input = concat (D + 2 F).
//   Z-Image block: norm input, modulated input, q, k, v, q and k normed + roped, attention output, output norm,
//     second norm input, modulated (11 D); SwiGLU w1 and w3 outputs and their product (3 F).
// Checkpointed, a block keeps its inputs: the stream(s) it reads, D per token (the recompute's own activations
// are one block's worth, counted once).
#include "train/memory_estimate.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "model/generator.h"

namespace iomm {
namespace {

// 1536 -> "1.5 KiB": the tiny world's estimates are KiB, the paper's tens of GiB.
std::string bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  return fmt::format("{:.{}f} {}", b, u == 0 ? 0 : 2, units[u]);
}

struct BlockKind {
  double full = 0;     // elements one block saves for one sample
  double kept = 0;     // elements it keeps when checkpointed (its input stream)
  int64_t blocks = 0;
};

// `kinds` in forward order. `every` = 0: nothing recomputed; else block i (counted over all blocks in order, as
// checkpoint_block does) is checkpointed when i % every == 0, and during backward one block's full activations exist
// again at a time. Backward also holds the gradients of one block's activations while it runs: one more block.
double saved_elements(const std::vector<BlockKind>& kinds, int64_t every) {
  double sum = 0, largest = 0, recomputed = 0;
  int64_t index = 0;
  for (const auto& k : kinds) {
    for (int64_t b = 0; b < k.blocks; ++b, ++index) {
      const bool ck = every > 0 && index % every == 0;
      sum += ck ? k.kept : k.full;
      if (ck) recomputed = std::max(recomputed, k.full);
    }
    if (k.blocks > 0) largest = std::max(largest, k.full);
  }
  return sum + largest + recomputed;
}

// `scores`: the attention kernel keeps the scores and the softmax probabilities (2 × heads × tokens² per block), as
// the math path of SDPA does on the CPU; CUDA's flash / memory-efficient kernels keep O(tokens).
double mmdit_elements(const MMDiTConfig& c, int64_t n, int64_t l, int64_t every, bool scores) {
  const double D = double(c.hidden_size), F = double(c.mlp_hidden()), s = double(n + l);
  const double attn = scores ? 2 * double(c.num_heads) * s * s : 0;
  return saved_elements({{s * (11 * D + 2 * F) + attn, s * D, c.depth},
                         {s * (10 * D + 3 * F) + attn, s * D, c.depth_single}},
                        every);
}

double zimage_elements(const ZImageConfig& c, int64_t n, int64_t l, int64_t every, bool scores) {
  const double D = double(c.dim), F = double(c.ffn_hidden()), H = double(c.n_heads);
  auto block = [&](double tokens, int64_t count) {
    return BlockKind{tokens * (11 * D + 3 * F) + (scores ? 2 * H * tokens * tokens : 0), tokens * D, count};
  };
  // noise_refiner over the image tokens, context_refiner over the condition, then the joint layers.
  return saved_elements({block(double(n), c.n_refiner_layers), block(double(l), c.n_refiner_layers),
                         block(double(n + l), c.n_layers)},
                        every);
}

}  // namespace

double generator_activation_elements(const GeneratorConfig& g, int64_t image_tokens, int64_t context_tokens,
                                     int64_t checkpoint_every, bool attention_scores) {
  if (g.arch == "zimage")
    return zimage_elements(g.zimage, image_tokens, context_tokens, checkpoint_every, attention_scores);
  return mmdit_elements(g.mmdit, image_tokens, context_tokens, checkpoint_every, attention_scores);
}

MemoryEstimate estimate_memory(const GeneratorConfig& g, const MemoryInputs& in) {
  MemoryEstimate e;
  const double p = double(in.trainable_params);
  e.params = 4 * p;  // fp32 master weights
  e.grads = 4 * p;
  const double moments = in.optimizer == "muon" ? 2 * (p - double(in.matrix_params)) + double(in.matrix_params)
                                                : 2 * p;
  e.optimizer = 4 * moments / double(std::max(1, in.zero1_ranks));
  e.ema = in.ema && !in.ema_on_cpu ? 4 * p : 0;
  e.frozen = double(in.frozen_bytes);
  e.activations_per_sample = double(in.activation_bytes) *
                             generator_activation_elements(g, in.image_tokens, in.context_tokens, in.checkpoint_every,
                                                           in.attention_scores);
  e.activations = e.activations_per_sample * double(in.batch);
  return e;
}

std::string MemoryEstimate::describe() const {
  return fmt::format("memory estimate per device: {} = parameters {} + gradients {} + optimizer {} + EMA {} + frozen "
                     "MLLM {} + activations {} ({} per sample); add ~1-2 GiB for the CUDA context and workspaces",
                     bytes(total()), bytes(params), bytes(grads), bytes(optimizer), bytes(ema), bytes(frozen),
                     bytes(activations), bytes(activations_per_sample));
}

}  // namespace iomm
