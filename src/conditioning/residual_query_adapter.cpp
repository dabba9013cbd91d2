#include "conditioning/residual_query_adapter.h"

#include <cmath>

#include <torch/torch.h>

#include "core/error.h"

namespace iomm {

namespace {

// Holds the attention parameters under the names of nn.MultiheadAttention ("attn.in_proj_weight", ...).
struct AttnParamsImpl : torch::nn::Module {};
TORCH_MODULE(AttnParams);
struct MlpParamsImpl : torch::nn::Module {};
TORCH_MODULE(MlpParams);

at::Tensor layer_norm(const at::Tensor& x, double eps) {
  return torch::layer_norm(x.to(torch::kFloat), {x.size(-1)}, {}, {}, eps).to(x.scalar_type());
}

}  // namespace

ResidualQueryAdapterImpl::ResidualQueryAdapterImpl(const RQAConfig& c) : config(c) {
  if (c.num_queries < 1) fail("RQA: num_queries must be ≥ 1, got {}", c.num_queries);
  queries = register_parameter("queries", torch::empty({c.num_queries, c.dim}));
  if (!c.cross_attention) {
    init_weights();  // the queries are the whole module here; torch::empty left them as whatever memory held
    return;
  }
  if (c.dim % c.num_heads != 0) fail("RQA: dim {} is not divisible by num_heads {}", c.dim, c.num_heads);
  auto attn = register_module("attn", AttnParams());
  in_proj_weight = attn->register_parameter("in_proj_weight", torch::empty({3 * c.dim, c.dim}));
  in_proj_bias = attn->register_parameter("in_proj_bias", torch::empty({3 * c.dim}));
  out_proj = attn->register_module("out_proj", torch::nn::Linear(c.dim, c.dim));
  auto mlp = register_module("mlp", MlpParams());
  int64_t hidden = static_cast<int64_t>(std::llround(double(c.dim) * c.mlp_ratio));
  fc1 = mlp->register_module("fc1", torch::nn::Linear(c.dim, hidden));
  fc2 = mlp->register_module("fc2", torch::nn::Linear(hidden, c.dim));
  init_weights();
}

void ResidualQueryAdapterImpl::init_weights() {
  torch::NoGradGuard no_grad;
  queries.normal_(0.0, 1.0 / std::sqrt(double(config.dim)));
  if (!config.cross_attention) return;
  torch::nn::init::xavier_uniform_(in_proj_weight);
  in_proj_bias.zero_();
  out_proj->reset_parameters();
  out_proj->bias.zero_();  // nn.MultiheadAttention zeroes out_proj.bias
  fc1->reset_parameters();
  fc2->reset_parameters();
}

at::Tensor ResidualQueryAdapterImpl::forward(const at::Tensor& c, const at::Tensor& key_mask) {
  if (c.dim() != 3 || c.size(2) != config.dim)
    fail("RQA: the condition must be [B, L, {}], got {}", config.dim, c10::str(c.sizes()));
  int64_t B = c.size(0), L = c.size(1), D = config.dim, Nq = config.num_queries;
  auto Q = queries.unsqueeze(0).expand({B, Nq, D}).to(c.scalar_type());
  if (!config.cross_attention) return Q;
  int64_t H = config.num_heads, hd = D / H;
  auto w = in_proj_weight.chunk(3, 0);
  auto b = in_proj_bias.chunk(3, 0);
  auto qn = layer_norm(Q, config.norm_eps), kvn = layer_norm(c, config.norm_eps);
  auto heads = [&](const at::Tensor& x, int64_t n) { return x.view({B, n, H, hd}).transpose(1, 2); };
  auto q = heads(torch::linear(qn, w[0], b[0]), Nq);
  auto k = heads(torch::linear(kvn, w[1], b[1]), L);
  auto v = heads(torch::linear(kvn, w[2], b[2]), L);
  std::optional<at::Tensor> mask;
  if (key_mask.defined()) mask = key_mask.to(c.device()).to(torch::kBool).view({B, 1, 1, L});
  auto a = at::scaled_dot_product_attention(q, k, v, mask).transpose(1, 2).reshape({B, Nq, D});
  auto x = Q + out_proj->forward(a);
  return x + fc2->forward(torch::gelu(fc1->forward(layer_norm(x, config.norm_eps)), "tanh"));
}

}  // namespace iomm
