// The IOMM conditioner (paper §3, Fig. 2): condition c (text, or the image's own tokens after an auxiliary
// prompt with Masked Image Modeling, or instruction + reference image) -> Residual Query Adapter q -> the frozen
// MLLM on [c ; q] -> h, the final hidden states at the query positions (option: the whole valid sequence).
//
// Gradient path: attention is causal and q comes last, so the prefix c does not depend on trainable weights.
// The prefix runs once without grad and leaves a KV cache; only the query positions run with grad, through the
// frozen LLM into the adapter (identical result to one full pass, a fraction of the compute and memory).
//
// Modes (for the paper's ablation, Fig. 2b / 4a): rqa (the paper), metaquery (learned queries appended, no
// cross-attention), raw (h = the MLLM's hidden states of c itself; nothing trainable here).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "conditioning/condition_sequence.h"
#include "conditioning/mask_image_tokens.h"
#include "conditioning/residual_query_adapter.h"
#include "models/internvl.h"
#include "text/tokenizer.h"

namespace iomm {

class Config;

struct ConditionerConfig {
  std::string mode = "rqa";             // rqa | metaquery | raw
  std::string cond_tokens = "queries";  // queries | all (the valid prefix positions too)
  RQAConfig rqa;                        // dim comes from the MLLM
  double mask_ratio = 0.85;             // r of Masked Image Modeling (image conditions, training only)
  MaskGranularity mask_granularity = MaskGranularity::token;
  ConditionTemplates templates;

  // Keys under `prefix` (mode, cond_tokens, num_queries, num_heads, mlp_ratio, mask_ratio, mask_granularity,
  // aux_prompt, t2i_prefix, uncond_prompt, max_text_tokens). `mllm_dim` = the MLLM's embedding width.
  static ConditionerConfig from_config(Config& cfg, const std::string& prefix, int64_t mllm_dim);
};

struct Condition {
  at::Tensor h;     // [B, N, D_mllm]: the generator's text stream
  at::Tensor mask;  // [B, N] bool, true = real token
};

struct IommConditionerImpl : torch::nn::Module {
  // `mllm` stays frozen and is not a registered submodule (it is the user's checkpoint, saved nowhere).
  IommConditionerImpl(const ConditionerConfig& c, InternVL mllm, Tokenizer tokenizer);

  // `mim`: apply Masked Image Modeling to image conditions (training); edit conditions are never masked.
  // `gen` draws the masks (required when mim and mask_ratio > 0), unless `keep` gives them: bool, one row per
  // input with an image (in input order), [rows, T] for token granularity or [rows, T, D] for element; rows of
  // edit conditions are ignored. Given masks make the objective checkable against a reference (golden test).
  Condition forward(const std::vector<ConditionInput>& inputs, bool mim, at::Generator* gen,
                    const at::Tensor& keep = {});

  // c_img [rows, T, D] of the inputs `rows`: their cached image_tokens, else computed from their images.
  at::Tensor image_tokens_of(const std::vector<ConditionInput>& inputs, const std::vector<int64_t>& rows);

  int64_t width() const;  // D_mllm: the generator's context_in_dim
  int64_t image_tokens_per_image() const { return mllm->config.tokens_per_tile(); }

  ConditionerConfig config;
  InternVL mllm{nullptr};
  Tokenizer tokenizer;
  ResidualQueryAdapter rqa{nullptr};  // registered as "rqa"; null in raw mode
  int64_t pad_id = 0;
  int64_t truncated = 0;  // captions cut so far
};
TORCH_MODULE(IommConditioner);

// An image condition's tokens c_img = mlp1(pixel_shuffle(InternViT(x))) for images [B, 3, R, R] in [-1, 1]
// (resized to the MLLM's tile as OpenUni does): [B, T, D] on the MLLM's device and dtype, before any MIM mask.
// The conditioner and `iomm cache` both compute image tokens through this one function.
at::Tensor image_condition_tokens(InternVLImpl& mllm, const at::Tensor& images);

}  // namespace iomm
