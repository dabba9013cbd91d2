#include "models/internvl_preprocess.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <torch/torch.h>

#include "core/error.h"
#include "data/image_tensor.h"

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

at::Tensor internvl_dynamic_tiles(const Image& image, const DynamicTiling& o) {
  if (image.empty()) fail("dynamic tiling: empty image");
  if (o.tile_size <= 0) fail("dynamic tiling: tile_size must be positive, got {}", o.tile_size);
  const Image rgb = image.channels == 3 ? image : to_rgb(image);
  const int S = o.tile_size;
  auto g = choose_tile_grid(rgb.width, rgb.height, o.min_tiles, o.max_tiles, S);
  auto whole = image_to_tensor(resize(rgb, S * g.cols, S * g.rows, Resample::Bicubic));  // [3, rows·S, cols·S]
  auto tiles = whole.view({3, g.rows, S, g.cols, S}).permute({1, 3, 0, 2, 4}).reshape({g.tiles(), 3, S, S});
  if (o.use_thumbnail && g.tiles() > 1)
    tiles = torch::cat({tiles, image_to_tensor(resize(rgb, S, S, Resample::Bicubic)).unsqueeze(0)}, 0);
  return imagenet_normalize(tiles);
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

ForwardComponent internvl_tiles_forward_component() {
  ForwardComponent c;
  c.name = "internvl_tiles";
  c.help = "InternVL dynamic tiling (1..12 tiles of 448², thumbnail, ImageNet normalisation): image uint8 [H,W,C] "
           "-> pixel_values [tiles,3,448,448]";
  c.inputs = {"image"};
  c.outputs = {"pixel_values"};
  c.load = [](const ForwardOptions&) {
    return LoadedComponent{{}, [](const TensorMap& in) {
      const auto& t = in.at("image");
      if (t.scalar_type() != torch::kUInt8 || t.dim() != 3)
        fail("internvl_tiles: image must be uint8 [H, W, C], got {} {}", c10::toString(t.scalar_type()),
             c10::str(t.sizes()));
      Image img(static_cast<int>(t.size(1)), static_cast<int>(t.size(0)), static_cast<int>(t.size(2)));
      auto hwc = t.contiguous();
      std::memcpy(img.pixels.data(), hwc.data_ptr<uint8_t>(), img.pixels.size());
      return TensorMap{{"pixel_values", internvl_dynamic_tiles(img)}};
    }};
  };
  return c;
}

}  // namespace iomm
