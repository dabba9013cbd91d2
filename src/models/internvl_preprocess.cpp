#include "models/internvl_preprocess.h"

#include <cmath>
#include <limits>
#include <vector>

#include <torch/torch.h>

#include "core/error.h"

namespace iomm {

TileGrid choose_tile_grid(int width, int height, int min_tiles, int max_tiles, int tile_size) {
  if (width <= 0 || height <= 0) fail("dynamic tiling: image size {}x{} is empty", width, height);
  if (min_tiles < 1 || max_tiles < min_tiles)
    fail("dynamic tiling: need 1 <= min_tiles <= max_tiles, got min_tiles {} and max_tiles {}", min_tiles, max_tiles);
  std::vector<TileGrid> candidates;
  for (int cols = 1; cols <= max_tiles; ++cols)
    for (int rows = 1; cols * rows <= max_tiles; ++rows)
      if (cols * rows >= min_tiles) candidates.push_back({cols, rows});
  std::stable_sort(candidates.begin(), candidates.end(), [](const TileGrid& a, const TileGrid& b) {
    return a.tiles() != b.tiles() ? a.tiles() < b.tiles() : a.rows > b.rows;
  });
  // The same double arithmetic as the reference (Python floats).
  double aspect = static_cast<double>(width) / height;
  double area = static_cast<double>(width) * height;
  double best_diff = std::numeric_limits<double>::infinity();
  TileGrid best{1, 1};
  for (const auto& g : candidates) {
    double diff = std::abs(aspect - static_cast<double>(g.cols) / g.rows);
    if (diff < best_diff) {
      best_diff = diff;
      best = g;
    } else if (diff == best_diff && area > 0.5 * tile_size * tile_size * g.cols * g.rows) {
      best = g;
    }
  }
  return best;
}

at::Tensor imagenet_normalize(const at::Tensor& x01) {
  if (x01.dim() < 3 || x01.size(-3) != 3)
    fail("ImageNet normalisation: expected [..., 3, H, W], got {}", c10::str(x01.sizes()));
  auto opts = torch::dtype(torch::kFloat32).device(x01.device());
  auto mean = torch::tensor({kImageNetMean[0], kImageNetMean[1], kImageNetMean[2]}, opts).view({3, 1, 1});
  auto std = torch::tensor({kImageNetStd[0], kImageNetStd[1], kImageNetStd[2]}, opts).view({3, 1, 1});
  return (x01.to(torch::kFloat32) - mean) / std;
}

at::Tensor internvl_condition_pixels(const at::Tensor& images, int64_t size) {
  if (images.dim() != 4 || images.size(1) != 3)
    fail("InternVL conditioning: images must be [B, 3, H, W] in [-1, 1], got {}", c10::str(images.sizes()));
  auto x = imagenet_normalize((images.to(torch::kFloat32) + 1.0) / 2.0);
  namespace F = torch::nn::functional;
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{size, size})
                               .mode(torch::kBilinear)
                               .align_corners(false)
                               .antialias(false));
}

}  // namespace iomm
