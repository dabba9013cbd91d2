#include "model/flops.h"

#include <torch/torch.h>

#include "conditioning/condition_sequence.h"
#include "model/iomm_model.h"

namespace iomm {

namespace {

double dd(int64_t x) { return static_cast<double>(x); }
double linear(double tokens, int64_t in, int64_t out) { return 2.0 * tokens * dd(in) * dd(out); }
// QKᵀ and AV: 2 · 2 · queries · keys · width.
double attention(double queries, double keys, int64_t width) { return 4.0 * queries * keys * dd(width); }
double conv3x3(double pixels, int64_t in, int64_t out) { return 2.0 * pixels * 9.0 * dd(in) * dd(out); }

// A standard pre-norm transformer layer on `n` tokens of width `w`: fused qkv, output projection, attention to
// `keys` keys, and an MLP of `mlp` hidden units with `mlp_mats` matrices (2 for GELU, 3 for SwiGLU).
double transformer_layer(double n, double keys, int64_t w, int64_t mlp, int mlp_mats) {
  return linear(n, w, 3 * w) + linear(n, w, w) + attention(n, keys, w) + mlp_mats * linear(n, w, mlp);
}

// The FLUX / diffusers AutoencoderKL ResNet block: two 3×3 convs and a 1×1 shortcut when the width changes.
double resnet(double pixels, int64_t in, int64_t out) {
  return conv3x3(pixels, in, out) + conv3x3(pixels, out, out) + (in != out ? linear(pixels, in, out) : 0.0);
}

double ae_mid(const AutoencoderConfig& c, double pixels) {
  int64_t C = c.block_out_channels.back();
  double f = 2 * resnet(pixels, C, C);
  if (c.mid_attention) f += linear(pixels, C, 3 * C) + linear(pixels, C, C) + attention(pixels, pixels, C);
  return f;
}

double mmdit_flops(const MMDiTConfig& c, double n_img, double n_txt) {
  int64_t W = c.hidden_size, M = c.mlp_hidden();
  double S = n_img + n_txt;
  double f = linear(n_img, c.in_channels, W) + linear(n_txt, c.context_in_dim, W);
  f += linear(1, 256, W) + linear(1, W, W);                                      // time_in
  if (c.vec_in_dim > 0) f += linear(1, c.vec_in_dim, W) + linear(1, W, W);       // vector_in
  if (c.guidance_embed) f += linear(1, 256, W) + linear(1, W, W);
  double dbl = transformer_layer(S, S, W, M, 2) + 2 * linear(1, W, 6 * W);      // both streams + modulation
  double sgl = linear(S, W, 3 * W + M) + linear(S, W + M, W) + attention(S, S, W) + linear(1, W, 3 * W);
  f += dd(c.depth) * dbl + dd(c.depth_single) * sgl;
  return f + linear(1, W, 2 * W) + linear(n_img, W, c.out_channels);           // final layer
}

double zimage_flops(const ZImageConfig& c, double n_img, double n_cap) {
  int64_t D = c.dim, F = c.ffn_hidden();
  auto block = [&](double n, bool modulated) {
    return transformer_layer(n, n, D, F, 3) + (modulated ? linear(1, c.adaln_dim(), 4 * D) : 0.0);
  };
  double f = linear(n_img, c.patch_dim(), D) + linear(n_cap, c.cap_feat_dim, D);
  f += linear(1, 256, ZImageConfig::kTimeMidDim) + linear(1, ZImageConfig::kTimeMidDim, c.adaln_dim());
  f += dd(c.n_refiner_layers) * (block(n_img, true) + block(n_cap, false));
  f += dd(c.n_layers) * block(n_img + n_cap, true);
  return f + linear(1, c.adaln_dim(), D) + linear(n_img, D, c.patch_dim());
}

// The generator's context length for one sample with a prefix of `prefix` tokens.
int64_t context_tokens(const ConditionerConfig& c, int64_t prefix) {
  if (c.mode == "raw") return prefix;
  return c.rqa.num_queries + (c.cond_tokens == "all" ? prefix : 0);
}

// Conditioning forward FLOPs of a batch: InternViT per image, the LLM prefix, and (rqa / metaquery) the adapter and
// the LLM at the query positions.
FlopCount conditioning_flops(const IommModel& m, const ConditionShape& s) {
  const auto& cc = m.conditioner().config;
  const auto& mc = m.conditioner().mllm->config;
  FlopCount f;
  f.parts["vit"] = dd(s.images) * vit_flops(mc);
  for (int64_t L : s.prefix) {
    f.parts["llm_prefix"] += llm_flops(mc.llm, L, (dd(L) + 1) / 2);
    if (cc.mode == "raw") continue;
    int64_t q = cc.rqa.num_queries;
    f.parts["llm_queries"] += llm_flops(mc.llm, q, dd(L) + (dd(q) + 1) / 2);
    f.parts["rqa"] += rqa_flops(cc.rqa, L);
  }
  return f;
}

const AutoencoderConfig* flux_ae(const IommModel& m) { return m.autoencoder().flux_config(); }

}  // namespace

double FlopCount::total() const {
  double t = 0;
  for (auto& [k, v] : parts) t += v;
  return t;
}

double vit_flops(const InternVLConfig& c) {
  const auto& v = c.vision;
  int64_t grid = c.tile_size / v.patch_size;
  double P = dd(grid * grid), n = P + 1;  // patches + CLS
  double f = linear(P, v.num_channels * v.patch_size * v.patch_size, v.hidden_size);
  f += dd(v.num_hidden_layers) * transformer_layer(n, n, v.hidden_size, v.intermediate_size, 2);
  double T = dd(c.tokens_per_tile());
  return f + linear(T, c.projector_in(), c.llm.hidden_size) + linear(T, c.llm.hidden_size, c.llm.hidden_size);
}

double llm_flops(const Qwen2Config& c, int64_t n, double attended) {
  double N = dd(n);
  int64_t D = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  double layer = linear(N, D, q) + 2 * linear(N, D, kv) + linear(N, q, D) + attention(N, attended, q) +
                 3 * linear(N, D, c.intermediate_size);
  return dd(c.num_hidden_layers) * layer;
}

double rqa_flops(const RQAConfig& c, int64_t context) {
  if (!c.cross_attention) return 0.0;  // MetaQuery: the queries are parameters, nothing runs
  double q = dd(c.num_queries), L = dd(context);
  auto hidden = static_cast<int64_t>(dd(c.dim) * c.mlp_ratio);
  return 2 * linear(q, c.dim, c.dim) + linear(L, c.dim, 2 * c.dim) + attention(q, L, c.dim) +
         2 * linear(q, c.dim, hidden);
}

double generator_flops(const GeneratorConfig& c, int64_t image_tokens, int64_t context) {
  if (c.arch == "zimage") return zimage_flops(c.zimage, dd(image_tokens), dd(context));
  return mmdit_flops(c.mmdit, dd(image_tokens), dd(context));
}

double ae_encode_flops(const AutoencoderConfig& c, int64_t h, int64_t w) {
  double px = dd(h) * dd(w);
  int64_t prev = c.block_out_channels.front();
  double f = conv3x3(px, c.in_channels, prev);
  for (size_t i = 0; i < c.block_out_channels.size(); ++i) {
    int64_t out = c.block_out_channels[i];
    for (int64_t j = 0; j < c.layers_per_block; ++j) f += resnet(px, j == 0 ? prev : out, out);
    prev = out;
    if (i + 1 < c.block_out_channels.size()) px /= 4, f += conv3x3(px, out, out);  // stride-2 downsample
  }
  f += ae_mid(c, px) + conv3x3(px, prev, 2 * c.latent_channels);
  return f + (c.use_quant_conv ? linear(px, 2 * c.latent_channels, 2 * c.latent_channels) : 0.0);
}

double ae_decode_flops(const AutoencoderConfig& c, int64_t h, int64_t w) {
  double scale = dd(c.downsample_factor());
  double px = dd(h) * dd(w) / (scale * scale);
  int64_t prev = c.block_out_channels.back();
  double f = (c.use_post_quant_conv ? linear(px, c.latent_channels, c.latent_channels) : 0.0);
  f += conv3x3(px, c.latent_channels, prev) + ae_mid(c, px);
  for (size_t k = c.block_out_channels.size(); k-- > 0;) {
    int64_t out = c.block_out_channels[k];
    for (int64_t j = 0; j <= c.layers_per_block; ++j) f += resnet(px, j == 0 ? prev : out, out);
    prev = out;
    if (k > 0) px *= 4, f += conv3x3(px, out, out);  // nearest ×2, then a 3×3 conv
  }
  return f + conv3x3(px, prev, c.out_channels);
}

ConditionShape condition_shape(const IommModel& m, const std::vector<ConditionInput>& conds) {
  const auto& c = m.conditioner();
  auto tok = tokenize_conditions(conds, c.config.templates, c.tokenizer, c.image_tokens_per_image(), c.pad_id);
  ConditionShape s;
  auto lengths = tok.attention_mask.sum(1).to(torch::kLong);
  for (int64_t i = 0; i < lengths.size(0); ++i) s.prefix.push_back(lengths[i].item<int64_t>());
  s.images = int64_t(tok.image_rows.size());
  return s;
}

FlopCount training_step_flops(const IommModel& m, const ConditionShape& s) {
  const auto& cc = m.conditioner().config;
  FlopCount f = conditioning_flops(m, s);
  f.parts["llm_queries"] *= 2;  // forward + input gradients through the frozen LLM
  f.parts["rqa"] *= 3;
  for (int64_t L : s.prefix)
    f.parts["generator"] += 3 * generator_flops(m.config().generator, m.image_seq_len(), context_tokens(cc, L));
  int64_t R = m.config().resolution;
  if (auto* ae = flux_ae(m)) f.parts["autoencoder"] = dd(int64_t(s.prefix.size())) * ae_encode_flops(*ae, R, R);
  return f;
}

FlopCount generation_flops(const IommModel& m, const ConditionShape& conds, const ConditionShape& uncond,
                           int64_t steps, bool cfg) {
  const auto& cc = m.conditioner().config;
  FlopCount f = conditioning_flops(m, conds);
  if (cfg)
    for (auto& [k, v] : conditioning_flops(m, uncond).parts) f.parts[k] += v;
  double per_step = 0;
  for (int64_t L : conds.prefix) per_step += generator_flops(m.config().generator, m.image_seq_len(), context_tokens(cc, L));
  if (cfg)
    for (int64_t L : uncond.prefix)
      per_step += generator_flops(m.config().generator, m.image_seq_len(), context_tokens(cc, L));
  f.parts["generator"] = dd(steps) * per_step;
  int64_t R = m.config().resolution;
  if (auto* ae = flux_ae(m)) f.parts["autoencoder"] = dd(int64_t(conds.prefix.size())) * ae_decode_flops(*ae, R, R);
  return f;
}

}  // namespace iomm
