#include "data/image_tensor.h"

#include <torch/torch.h>

#include "core/error.h"

namespace iomm {

namespace {
std::string shape_str(const at::Tensor& t) {
  std::string s;
  for (int64_t d : t.sizes()) {
    if (!s.empty()) s += 'x';
    s += std::to_string(d);
  }
  return s.empty() ? "scalar" : s;
}
}  // namespace

at::Tensor image_to_tensor(const Image& img) {
  if (img.empty()) fail("image_to_tensor: empty image");
  auto hwc = torch::from_blob(const_cast<uint8_t*>(img.pixels.data()), {img.height, img.width, img.channels},
                              torch::kUInt8);
  return hwc.permute({2, 0, 1}).to(torch::kFloat32).div_(255.0f).contiguous();
}

Image tensor_to_image(const at::Tensor& chw) {
  if (chw.dim() != 3 || (chw.size(0) != 1 && chw.size(0) != 3 && chw.size(0) != 4))
    fail("tensor_to_image: expected a CHW tensor with 1, 3 or 4 channels, got shape {}", shape_str(chw));
  if (!chw.is_floating_point()) fail("tensor_to_image: expected a floating-point tensor, got {}", c10::toString(chw.scalar_type()));
  auto u8 = chw.detach().to(torch::kCPU, torch::kFloat32).clamp(0.0, 1.0).mul(255.0).round().to(torch::kUInt8);
  auto hwc = u8.permute({1, 2, 0}).contiguous();
  Image img(static_cast<int>(chw.size(2)), static_cast<int>(chw.size(1)), static_cast<int>(chw.size(0)));
  std::memcpy(img.pixels.data(), hwc.data_ptr<uint8_t>(), img.pixels.size());
  return img;
}

at::Tensor images_to_batch(const std::vector<Image>& images) {
  if (images.empty()) fail("images_to_batch: no images");
  const Image& first = images.front();
  auto batch = torch::empty({static_cast<int64_t>(images.size()), first.channels, first.height, first.width},
                            torch::kFloat32);
  for (size_t i = 0; i < images.size(); ++i) {
    const Image& im = images[i];
    if (im.width != first.width || im.height != first.height || im.channels != first.channels)
      fail("images_to_batch: image {} is {}x{}x{} but image 0 is {}x{}x{}; resize/convert them to one shape first",
           i, im.width, im.height, im.channels, first.width, first.height, first.channels);
    batch[static_cast<int64_t>(i)].copy_(image_to_tensor(im));
  }
  return batch;
}

std::vector<Image> batch_to_images(const at::Tensor& nchw) {
  if (nchw.dim() != 4) fail("batch_to_images: expected an NCHW tensor, got shape {}", shape_str(nchw));
  std::vector<Image> out;
  out.reserve(static_cast<size_t>(nchw.size(0)));
  for (int64_t i = 0; i < nchw.size(0); ++i) out.push_back(tensor_to_image(nchw[i]));
  return out;
}

at::Tensor normalize_signed(const at::Tensor& x) { return x * 2.0 - 1.0; }
at::Tensor denormalize_signed(const at::Tensor& x) { return (x + 1.0) * 0.5; }

}  // namespace iomm
