#include "conditioning/mask_image_tokens.h"

#include <torch/torch.h>

#include "core/error.h"

namespace iomm {

MaskGranularity parse_mask_granularity(const std::string& s) {
  if (s == "token") return MaskGranularity::token;
  if (s == "element") return MaskGranularity::element;
  fail("mask granularity '{}' is not one of: token, element", s);
}

MaskedImageTokens mask_image_tokens(const at::Tensor& c_img, double ratio, at::Generator& gen,
                                    MaskGranularity granularity) {
  if (!(ratio >= 0.0 && ratio <= 1.0)) fail("mask_image_tokens: ratio {} is outside [0, 1]", ratio);
  auto shape = c_img.sizes().vec();
  if (granularity == MaskGranularity::token) shape.pop_back();
  if (ratio == 0.0) return {c_img, torch::ones(shape, c_img.options().dtype(torch::kBool))};
  auto keep = draw_keep_mask(shape, ratio, gen).to(c_img.device());
  return {apply_keep_mask(c_img, keep, granularity), keep};
}

at::Tensor draw_keep_mask(const std::vector<int64_t>& shape, double ratio, at::Generator& gen) {
  // Drawn on the CPU generator (moved by the caller): the same generator state gives the same mask on every device.
  return torch::rand(shape, gen, torch::TensorOptions().dtype(torch::kFloat)) >= ratio;
}

at::Tensor apply_keep_mask(const at::Tensor& c_img, const at::Tensor& keep, MaskGranularity granularity) {
  auto want = c_img.sizes().vec();
  if (granularity == MaskGranularity::token) want.pop_back();
  if (keep.sizes().vec() != want)
    fail("apply_keep_mask: keep-mask shape {} does not match the image tokens {} ({} granularity)",
         fmt::join(keep.sizes(), "x"), fmt::join(c_img.sizes(), "x"),
         granularity == MaskGranularity::token ? "token" : "element");
  auto m = granularity == MaskGranularity::token ? keep.unsqueeze(-1) : keep;
  return c_img * m.to(c_img.device(), c_img.scalar_type());
}

}  // namespace iomm
