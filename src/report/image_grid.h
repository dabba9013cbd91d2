// Sample grids for reports: torchvision.utils.make_grid's layout (row-major tiles, `pad` pixels between and
// around them) followed by a nearest-neighbour upscale, so that 32x32 samples are readable in a browser.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "data/image.h"

namespace iomm::report {

using Rgb = std::array<uint8_t, 3>;

// images: [N, C, H, W] with C = 1 (replicated to RGB, as make_grid does) or 3; float in [0, 1] (clamped, rounded
// like data/image_tensor.h) or uint8; any device. cols = tiles per row (the last row may be partly empty:
// pad colour). The result is RGB, ((rows * (H + pad) + pad) * scale) x ((cols' * (W + pad) + pad) * scale)
// with cols' = min(cols, N).
Image make_image_grid(const at::Tensor& images, int64_t cols, int64_t scale = 1, int64_t pad = 2,
                      Rgb pad_color = {255, 255, 255});
// The same layout over decoded RGB images of one size.
Image make_image_grid(const std::vector<Image>& tiles, int64_t cols, int64_t scale = 1, int64_t pad = 2,
                      Rgb pad_color = {255, 255, 255});
// "input | output" pairs (e.g. stage-1 reconstructions beside their inputs): each pair is one tile, the input
// left, the output right, split by a 1-px grey line; pairs are laid out `cols_pairs` per row with `pad` between.
Image make_pair_grid(const at::Tensor& inputs, const at::Tensor& outputs, int64_t cols_pairs, int64_t scale = 1,
                     int64_t pad = 2, Rgb pad_color = {255, 255, 255});
// Nearest-neighbour upscale by an integer factor (each pixel becomes a scale x scale block).
Image upscale_nearest(const Image& img, int64_t scale);

// make_image_grid + write_png (atomic); creates the parent directory.
void write_image_grid(const at::Tensor& images, const std::string& path, int64_t cols, int64_t scale = 1,
                      int64_t pad = 2);

}  // namespace iomm::report
