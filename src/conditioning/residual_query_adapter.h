// Residual Query Adapter (paper §3.4): learned queries Q cross-attend over the condition c (with a key padding
// mask) in one block, q = Q + MHA(LN(Q), LN(c)); q = q + MLP(LN(q)) (4× GELU-tanh), non-affine LayerNorms. The
// output is appended after c and the frozen MLLM runs on [c ; q]. 29M parameters at D = 1536 with 256 queries.
//
// Names: `queries` and `attn.{in_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias}` as in PyTorch's
// nn.MultiheadAttention, `mlp.fc1`, `mlp.fc2`.
//
// The MetaQuery-style ablation (learned queries, no cross-attention) is the same module with
// cross_attention = false: q = Q, and only `queries` exists.
#pragma once
#include <cstdint>
#include <string>

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

namespace iomm {

class Config;

struct RQAConfig {
  int64_t num_queries = 256;
  int64_t dim = 1536;       // = the MLLM's embedding width
  int64_t num_heads = 12;   // head dim 128 at D = 1536
  double mlp_ratio = 4.0;
  bool cross_attention = true;  // false: MetaQuery-style learned queries only
  double norm_eps = 1e-6;
};

struct ResidualQueryAdapterImpl : torch::nn::Module {
  explicit ResidualQueryAdapterImpl(const RQAConfig& c);
  // c [B, L, D]; key_mask [B, L] (bool or 0/1, true = real token; undefined = all real) -> q [B, Nq, D].
  at::Tensor forward(const at::Tensor& c, const at::Tensor& key_mask);
  // The initialisation of the paper's lineage: queries ~ N(0, 1/D) (OpenUni, LLaDA-Image), in_proj
  // xavier-uniform with zero bias (nn.MultiheadAttention), Linear defaults elsewhere; seeded by torch's RNG.
  void init_weights();

  RQAConfig config;
  at::Tensor queries;           // [Nq, D]
  at::Tensor in_proj_weight;    // [3D, D]  (registered under attn.)
  at::Tensor in_proj_bias;      // [3D]
  torch::nn::Linear out_proj{nullptr}, fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(ResidualQueryAdapter);

}  // namespace iomm
