// A light convolutional detail head after a patch-based generator (tiny-world option, off by default).
//
// Why: a DiT on 4×4 pixel patches has no locality bias below the patch; at the tiny world's budget it learns the
// colours of a scene but not its edges ("right colours, blurry shapes", docs/tiny-world.md). DiP (arXiv 2511.18822)
// and U-ViT's output conv add a small CNN that sees the noisy input at full resolution. Here: the generator's
// output, unpatchified, concatenated with x_t and a constant t channel, through three 3×3 convolutions, added to
// the generator's output. The last convolution starts at zero, so a fresh head is the identity of the DiT output
// (the paper's architecture) and training decides how much detail it adds.
//
// Parameter names (under the generator, e.g. "detail_head.conv_in.weight"): conv_in, conv_mid, conv_out.
#pragma once
#include <cstdint>

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

namespace iomm {

struct DetailHeadImpl : torch::nn::Module {
  // `latent_channels` C of the image the generator predicts; `channels` the width of the hidden convolutions.
  DetailHeadImpl(int64_t latent_channels, int64_t channels, const c10::TensorOptions& opts = {});
  // out, x_t: [B, C, H, W] (the generator's raw output and its noisy input, unpatchified); t: [B] in [0, 1].
  // Returns out + convs(cat(out, x_t, t)), [B, C, H, W].
  at::Tensor forward(const at::Tensor& out, const at::Tensor& x_t, const at::Tensor& t);
  // Kaiming-uniform hidden convolutions (libtorch's default, drawn from `seed`), zero conv_out: the identity.
  void init_weights(uint64_t seed);

  int64_t latent_channels, channels;
  torch::nn::Conv2d conv_in{nullptr}, conv_mid{nullptr}, conv_out{nullptr};
};
TORCH_MODULE(DetailHead);

}  // namespace iomm
