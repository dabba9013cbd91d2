#include "report/image_grid.h"

#include <filesystem>

#include <torch/torch.h>

#include "core/error.h"
#include "data/image_tensor.h"

namespace iomm::report {

namespace {

// NCHW (C = 1 or 3; float [0, 1] or uint8) -> RGB images. uint8 goes through /255 and back, which
// tensor_to_image makes exact, so there is one conversion path.
std::vector<Image> to_rgb_images(const at::Tensor& images, const char* what) {
  if (images.dim() != 4 || (images.size(1) != 1 && images.size(1) != 3))
    fail("{}: expected images shaped [N, 3, H, W] or [N, 1, H, W], got {}", what, c10::str(images.sizes()));
  if (images.size(0) == 0) fail("{}: no images (N = 0)", what);
  at::Tensor t = images.detach().to(torch::kCPU);
  if (t.scalar_type() == torch::kUInt8) t = t.to(torch::kFloat32).div_(255.0f);
  else if (!t.is_floating_point())
    fail("{}: images must be float in [0, 1] or uint8, got {}", what, c10::toString(t.scalar_type()));
  if (t.size(1) == 1) t = t.expand({-1, 3, -1, -1});
  return batch_to_images(t);
}

void check_layout(int64_t cols, int64_t scale, int64_t pad, const char* what) {
  if (cols < 1) fail("{}: cols = {} must be at least 1", what, cols);
  if (scale < 1 || scale > 64) fail("{}: scale = {} must be in 1..64", what, scale);
  if (pad < 0 || pad > 256) fail("{}: pad = {} must be in 0..256", what, pad);
}

void blit(Image& dst, const Image& src, int ox, int oy) {
  for (int y = 0; y < src.height; ++y)
    std::copy(src.row(y), src.row(y) + src.row_bytes(), dst.row(oy + y) + static_cast<size_t>(ox) * 3);
}

}  // namespace

Image upscale_nearest(const Image& img, int64_t scale) {
  if (scale < 1) fail("upscale_nearest: scale = {} must be at least 1", scale);
  if (scale == 1) return img;
  const int s = static_cast<int>(scale);
  Image out(img.width * s, img.height * s, img.channels);
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x)
      for (int c = 0; c < img.channels; ++c) out.at(x, y, c) = img.at(x / s, y / s, c);
  return out;
}

Image make_image_grid(const std::vector<Image>& tiles, int64_t cols, int64_t scale, int64_t pad, Rgb pad_color) {
  check_layout(cols, scale, pad, "make_image_grid");
  if (tiles.empty()) fail("make_image_grid: no images");
  const int w = tiles[0].width, h = tiles[0].height;
  for (size_t i = 0; i < tiles.size(); ++i)
    if (tiles[i].width != w || tiles[i].height != h || tiles[i].channels != 3)
      fail("make_image_grid: image {} is {}x{}x{} but the grid needs RGB images of image 0's size {}x{}; convert "
           "them first (to_rgb, resize)",
           i, tiles[i].width, tiles[i].height, tiles[i].channels, w, h);
  const int n = static_cast<int>(tiles.size()), p = static_cast<int>(pad);
  const int xmaps = std::min(static_cast<int>(cols), n), ymaps = (n + xmaps - 1) / xmaps;
  Image grid(xmaps * (w + p) + p, ymaps * (h + p) + p, 3);
  for (size_t i = 0; i < grid.pixels.size(); ++i) grid.pixels[i] = pad_color[i % 3];
  for (int k = 0; k < n; ++k) blit(grid, tiles[static_cast<size_t>(k)], (k % xmaps) * (w + p) + p, (k / xmaps) * (h + p) + p);
  return upscale_nearest(grid, scale);
}

Image make_image_grid(const at::Tensor& images, int64_t cols, int64_t scale, int64_t pad, Rgb pad_color) {
  check_layout(cols, scale, pad, "make_image_grid");
  return make_image_grid(to_rgb_images(images, "make_image_grid"), cols, scale, pad, pad_color);
}

Image make_pair_grid(const at::Tensor& inputs, const at::Tensor& outputs, int64_t cols_pairs, int64_t scale,
                     int64_t pad, Rgb pad_color) {
  check_layout(cols_pairs, scale, pad, "make_pair_grid");
  if (inputs.sizes() != outputs.sizes())
    fail("make_pair_grid: inputs are {} but outputs are {}; pass one output per input, same size",
         c10::str(inputs.sizes()), c10::str(outputs.sizes()));
  const auto in = to_rgb_images(inputs, "make_pair_grid"), out = to_rgb_images(outputs, "make_pair_grid");
  std::vector<Image> pairs;
  for (size_t i = 0; i < in.size(); ++i) {
    const int w = in[i].width, h = in[i].height;
    Image pair(2 * w + 1, h, 3);
    for (int y = 0; y < h; ++y)
      for (int c = 0; c < 3; ++c) pair.at(w, y, c) = 128;
    blit(pair, in[i], 0, 0);
    blit(pair, out[i], w + 1, 0);
    pairs.push_back(std::move(pair));
  }
  return make_image_grid(pairs, cols_pairs, scale, pad, pad_color);
}

void write_image_grid(const at::Tensor& images, const std::string& path, int64_t cols, int64_t scale, int64_t pad) {
  const Image grid = make_image_grid(images, cols, scale, pad);
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  write_png(grid, path);
}

}  // namespace iomm::report
