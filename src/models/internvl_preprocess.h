// InternVL3 image preprocessing (research mllm.md §3):
//  - InternVL's dynamic tiling for understanding: the closest-aspect-ratio grid of tile_size² tiles, tiles
//    row-major, a thumbnail appended when there is more than one tile, ImageNet normalisation;
//  - the single-tile conditioning path of OpenUni / IOMM on tensors: a [-1, 1] image -> (x+1)/2 -> ImageNet
//    normalisation -> bilinear resize to 448 without antialias.
#pragma once
#include <cstdint>

#include <ATen/core/Tensor.h>

#include "data/image.h"
#include "models/components.h"

namespace iomm {

constexpr float kImageNetMean[3] = {0.485f, 0.456f, 0.406f};
constexpr float kImageNetStd[3] = {0.229f, 0.224f, 0.225f};

struct TileGrid {
  int cols = 1, rows = 1;  // the image is resized to (cols·tile) × (rows·tile)
  int tiles() const { return cols * rows; }
  bool operator==(const TileGrid&) const = default;
};

// InternVL's find_closest_aspect_ratio: candidates (cols, rows) with min_tiles ≤ cols·rows ≤ max_tiles in order of
// cols·rows; the one minimising |width/height − cols/rows| wins; on an exact tie a later candidate wins only if
// width·height > 0.5·tile²·cols·rows. (Ties between two candidates of the same product depend on CPython's set
// order in the reference; here they are ordered by rows descending. With min_tiles = 1, the default, such a tie is
// never the best candidate (checked exhaustively for max_tiles ≤ 12), so the choice is exactly the reference's.)
TileGrid choose_tile_grid(int width, int height, int min_tiles = 1, int max_tiles = 12, int tile_size = 448);

struct DynamicTiling {
  int tile_size = 448;
  int min_tiles = 1;
  int max_tiles = 12;         // max_dynamic_patch of InternVL3
  bool use_thumbnail = true;  // a whole-image tile_size² thumbnail after the tiles when there is more than one
};

// InternVL's dynamic_preprocess + build_transform on an image (converted to RGB like Pillow's convert('RGB')):
// resize (Pillow bicubic) to the chosen grid, tiles row-major, optional thumbnail last, /255, ImageNet
// normalisation. Returns pixel_values [tiles, 3, tile, tile] float32 on the CPU.
at::Tensor internvl_dynamic_tiles(const Image& image, const DynamicTiling& options = {});

// (x − mean) / std per channel for x [..., 3, H, W] in [0, 1] (float32 result).
at::Tensor imagenet_normalize(const at::Tensor& x01);

// OpenUni's get_semantic_features preprocessing: images [B,3,H,W] in [-1, 1] (any float dtype, any device) ->
// pixel_values [B,3,size,size] float32: (x+1)/2, ImageNet normalisation, then bilinear interpolation
// (align_corners=false, no antialias) to size×size.
at::Tensor internvl_condition_pixels(const at::Tensor& images, int64_t size = 448);

// `iomm forward` component `internvl_tiles`: image (uint8 [H, W, C], C = 1, 3 or 4) -> pixel_values, with the
// default DynamicTiling; no model needed.
ForwardComponent internvl_tiles_forward_component();

}  // namespace iomm
