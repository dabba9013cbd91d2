// Masked Image Modeling on the condition (paper §3.3): during image-only training a Bernoulli fraction `ratio`
// of the image tokens c_img is zeroed, not dropped, so the sequence keeps its length and the generator has to
// complete the image from a partial view. ratio = 0 at inference.
#pragma once
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

namespace iomm {

// token: one keep/drop draw per token, broadcast over the width (the paper's prose, and LLaDA-Image's m ∈ {0,1}^N);
// element: one draw per entry of c_img (the paper's c_img ⊙ M notation read literally).
enum class MaskGranularity { token, element };
MaskGranularity parse_mask_granularity(const std::string& s);

struct MaskedImageTokens {
  at::Tensor tokens;  // c_img ⊙ M, same shape and dtype as the input
  at::Tensor keep;    // bool, [..., T] (token) or the input's shape (element): true = kept
};

// c_img [B, T, D] (any leading shape). Each entry of M is kept with probability 1 − ratio, drawn from `gen`
// (deterministic for a given generator state). ratio ∈ [0, 1]; ratio = 0 returns the input unchanged.
MaskedImageTokens mask_image_tokens(const at::Tensor& c_img, double ratio, at::Generator& gen,
                                    MaskGranularity granularity = MaskGranularity::token);

// The keep-mask draw alone: bool `shape` ([..., T] for token granularity, c_img's shape for element), each entry
// true with probability 1 − ratio (ratio > 0). mask_image_tokens draws exactly this; the trainer draws it per
// sample so that a batch split across ranks or micro-batches masks what the whole batch would.
at::Tensor draw_keep_mask(const std::vector<int64_t>& shape, double ratio, at::Generator& gen);

// c_img ⊙ M for a given keep-mask (bool, [..., T] for token granularity or c_img's shape for element).
at::Tensor apply_keep_mask(const at::Tensor& c_img, const at::Tensor& keep,
                           MaskGranularity granularity = MaskGranularity::token);

}  // namespace iomm
