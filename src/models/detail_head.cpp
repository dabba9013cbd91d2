#include "models/detail_head.h"

#include <torch/torch.h>

#include "core/error.h"

namespace iomm {

namespace {

torch::nn::Conv2d conv3x3(int64_t in, int64_t out) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1).bias(true));
}

}  // namespace

DetailHeadImpl::DetailHeadImpl(int64_t c, int64_t ch, const c10::TensorOptions& opts)
    : latent_channels(c), channels(ch) {
  if (c < 1 || ch < 1) fail("detail head: latent channels {} and width {} must both be >= 1", c, ch);
  conv_in = register_module("conv_in", conv3x3(2 * c + 1, ch));  // out, x_t and t as one constant channel
  conv_mid = register_module("conv_mid", conv3x3(ch, ch));
  conv_out = register_module("conv_out", conv3x3(ch, c));
  to(opts.device(), opts.dtype().toScalarType());
}

at::Tensor DetailHeadImpl::forward(const at::Tensor& out, const at::Tensor& x_t, const at::Tensor& t) {
  if (out.dim() != 4 || out.size(1) != latent_channels || !out.sizes().equals(x_t.sizes()))
    fail("detail head: expected out and x_t of shape [B, {}, H, W], got {} and {}", latent_channels, c10::str(out.sizes()),
         c10::str(x_t.sizes()));
  // t as a channel: the head must know the noise level to tell edges in x_t from noise.
  auto tt = t.to(out.scalar_type()).reshape({-1, 1, 1, 1}).expand({out.size(0), 1, out.size(2), out.size(3)});
  auto h = torch::silu(conv_in->forward(torch::cat({out, x_t.to(out.scalar_type()), tt}, 1)));
  h = torch::silu(conv_mid->forward(h));
  return out + conv_out->forward(h);
}

void DetailHeadImpl::init_weights(uint64_t seed) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  for (auto* conv : {&conv_in, &conv_mid}) (*conv)->reset_parameters();
  conv_out->weight.zero_();
  conv_out->bias.zero_();
}

}  // namespace iomm
