// FLOPs of IOMM's training step and of generation, counted from the configs, never measured: 2 per multiply-add of
// every matmul, convolution and attention product, on the valid (unpadded) tokens. Norms, activations, softmax,
// RoPE, the loss and the optimizer are left out (each well under 1% at the paper's sizes). Causal attention counts
// the keys each position sees (L(L+1)/2 for a prefix of L). Training counts backward as the gradients it needs:
//   trainable (generator, adapter)          3 × forward  (forward, input gradients, weight gradients)
//   frozen LLM at the query positions       2 × forward  (forward, input gradients towards the adapter)
//   frozen prefix, InternViT, autoencoder   1 × forward  (no grad)
// This is the "model FLOPs" convention of MFU (PaLM, App. B): work the step must do, not what the kernels did.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "conditioning/iomm_conditioner.h"
#include "models/autoencoder.h"
#include "models/internvl.h"
#include "model/generator.h"

namespace iomm {

class IommModel;

struct FlopCount {
  std::map<std::string, double> parts;  // vit, llm_prefix, llm_queries, rqa, generator, autoencoder
  double total() const;
};

// Forward FLOPs of the pieces.
double vit_flops(const InternVLConfig& c);  // one tile: patch embedding, the layers, pixel shuffle + mlp1
// `n` new positions of the Qwen2 LLM, each attending to `attended` keys on average.
double llm_flops(const Qwen2Config& c, int64_t n, double attended);
double rqa_flops(const RQAConfig& c, int64_t context);  // one sample with `context` condition tokens
double generator_flops(const GeneratorConfig& c, int64_t image_tokens, int64_t context_tokens);  // one sample
double ae_encode_flops(const AutoencoderConfig& c, int64_t h, int64_t w);  // one image of h × w pixels
double ae_decode_flops(const AutoencoderConfig& c, int64_t h, int64_t w);

// The conditions of a batch as the MLLM sees them: each sample's valid prefix length (its tokens in the chat
// template) and how many samples carry an image (InternViT runs).
struct ConditionShape {
  std::vector<int64_t> prefix;
  int64_t images = 0;
};
ConditionShape condition_shape(const IommModel& m, const std::vector<ConditionInput>& conds);

// One training micro-batch (forward + backward) of `conds`.
FlopCount training_step_flops(const IommModel& m, const ConditionShape& conds);
// One generate() call: conditioning (plus the unconditional prompt with CFG), `steps` generator evaluations
// (two per step with CFG), and decoding.
FlopCount generation_flops(const IommModel& m, const ConditionShape& conds, const ConditionShape& uncond,
                           int64_t steps, bool cfg);

}  // namespace iomm
