// Images <-> float tensors. Layout CHW (one image) or NCHW (a batch), values in [0, 1] = uint8 / 255.
#pragma once
#include <vector>

#include <ATen/core/Tensor.h>

#include "data/image.h"

namespace iomm {

// float32 CHW on the CPU, uint8 / 255.
at::Tensor image_to_tensor(const Image& img);
// From CHW (C = 1, 3 or 4) floats in [0, 1], on any device: clamp to [0, 1], times 255, round half to even
// (torch.round; the same as diffusers' numpy_to_pil `(x * 255).round()`). So u8 -> tensor -> u8 is exact.
Image tensor_to_image(const at::Tensor& chw);

// Stacks same-shaped images into float32 NCHW; fails naming the first image whose shape differs.
at::Tensor images_to_batch(const std::vector<Image>& images);
std::vector<Image> batch_to_images(const at::Tensor& nchw);

// [0, 1] <-> [-1, 1], the VAE / generator range.
at::Tensor normalize_signed(const at::Tensor& x);    // x * 2 - 1
at::Tensor denormalize_signed(const at::Tensor& x);  // (x + 1) / 2, not clamped

}  // namespace iomm
