#include "models/zimage_dit.h"


#include <cmath>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "models/activation_checkpoint.h"
#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/tensor_io.h"
#include "models/hf_config.h"
#include "models/name_conversion.h"
#include "models/weights.h"

namespace iomm {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------------- config

void ZImageConfig::validate(const std::string& source) const {
  if (dim <= 0 || n_heads <= 0 || dim % n_heads)
    fail("{}: dim {} is not a multiple of n_heads {}", source, dim, n_heads);
  int64_t sum = 0;
  for (auto d : axes_dims) {
    if (d <= 0 || d % 2) fail("{}: axes_dims entries must be positive and even (got {})", source, d);
    sum += d;
  }
  if (sum != head_dim())
    fail("{}: axes_dims sum to {} but head_dim = dim / n_heads = {}; make them sum to the head dim", source, sum,
         head_dim());
  if (axes_lens.size() != axes_dims.size())
    fail("{}: axes_lens has {} entries but axes_dims has {}", source, axes_lens.size(), axes_dims.size());
  if (axes_dims.size() != 3) fail("{}: Z-Image uses 3 RoPE axes (f/caption, h, w); axes_dims has {}", source,
                                   axes_dims.size());
  if (n_kv_heads != n_heads)
    fail("{}: n_kv_heads {} != n_heads {}: grouped k/v heads are not supported (diffusers ignores n_kv_heads too)",
         source, n_kv_heads, n_heads);
  if (in_channels <= 0 || patch_size <= 0 || f_patch_size <= 0 || cap_feat_dim <= 0 || n_layers < 0 ||
      n_refiner_layers < 0)
    fail("{}: in_channels, patch_size, f_patch_size, cap_feat_dim must be positive and layer counts >= 0", source);
}

ZImageConfig ZImageConfig::from_config(Config& cfg, const std::string& prefix, int64_t default_cap_feat_dim) {
  ZImageConfig c;
  if (default_cap_feat_dim > 0) c.cap_feat_dim = default_cap_feat_dim;
  auto k = [&](const char* name) { return prefix.empty() ? std::string(name) : prefix + "." + name; };
  auto arch = cfg.get_choice(k("arch"), "zimage", {"zimage"});
  (void)arch;
  c.in_channels = cfg.get_int(k("in_channels"), c.in_channels, 1);
  c.patch_size = cfg.get_int(k("patch_size"), c.patch_size, 1, 16);
  c.f_patch_size = cfg.get_int(k("f_patch_size"), c.f_patch_size, 1, 16);
  c.dim = cfg.get_int(k("dim"), c.dim, 1);
  c.n_layers = cfg.get_int(k("n_layers"), c.n_layers, 0);
  c.n_refiner_layers = cfg.get_int(k("n_refiner_layers"), c.n_refiner_layers, 0);
  c.n_heads = cfg.get_int(k("n_heads"), c.n_heads, 1);
  c.n_kv_heads = cfg.get_int(k("n_kv_heads"), c.n_heads, 1);
  c.norm_eps = cfg.get_double(k("norm_eps"), c.norm_eps, 0.0, 1.0);
  c.qk_norm = cfg.get_bool(k("qk_norm"), c.qk_norm);
  c.cap_feat_dim = cfg.get_int(k("cap_feat_dim"), c.cap_feat_dim, 1);
  c.rope_theta = cfg.get_double(k("rope_theta"), c.rope_theta, 1e-6);
  c.t_scale = cfg.get_double(k("t_scale"), c.t_scale, 1e-6);
  c.axes_dims = cfg.get_int_list(k("axes_dims"), c.axes_dims);
  c.axes_lens = cfg.get_int_list(k("axes_lens"), c.axes_lens);
  c.validate(cfg.source() + " [" + prefix + "]");
  return c;
}

ZImageConfig ZImageConfig::from_json(const nlohmann::json& j, const std::string& source) {
  auto cls = json_get<std::string>(j, "_class_name", "ZImageTransformer2DModel", source);
  if (cls != "ZImageTransformer2DModel")
    fail("{}: _class_name is '{}'; the zimage-dit component loads diffusers ZImageTransformer2DModel directories",
         source, cls);
  ZImageConfig c;
  auto ps = json_get<std::vector<int64_t>>(j, "all_patch_size", {2}, source);
  auto fps = json_get<std::vector<int64_t>>(j, "all_f_patch_size", {1}, source);
  if (ps.size() != 1 || fps.size() != 1)
    fail("{}: all_patch_size / all_f_patch_size list {} / {} patch sizes; iomm supports exactly one", source,
         ps.size(), fps.size());
  c.patch_size = ps[0];
  c.f_patch_size = fps[0];
  if (j.contains("siglip_feat_dim") && !j["siglip_feat_dim"].is_null())
    fail("{}: siglip_feat_dim is set (the Omni variant); iomm implements the basic text-to-image model only", source);
  c.in_channels = json_get<int64_t>(j, "in_channels", c.in_channels, source);
  c.dim = json_get<int64_t>(j, "dim", c.dim, source);
  c.n_layers = json_get<int64_t>(j, "n_layers", c.n_layers, source);
  c.n_refiner_layers = json_get<int64_t>(j, "n_refiner_layers", c.n_refiner_layers, source);
  c.n_heads = json_get<int64_t>(j, "n_heads", c.n_heads, source);
  c.n_kv_heads = json_get<int64_t>(j, "n_kv_heads", c.n_heads, source);
  c.norm_eps = json_get<double>(j, "norm_eps", c.norm_eps, source);
  c.qk_norm = json_get<bool>(j, "qk_norm", c.qk_norm, source);
  c.cap_feat_dim = json_get<int64_t>(j, "cap_feat_dim", c.cap_feat_dim, source);
  c.rope_theta = json_get<double>(j, "rope_theta", c.rope_theta, source);
  c.t_scale = json_get<double>(j, "t_scale", c.t_scale, source);
  c.axes_dims = json_get<std::vector<int64_t>>(j, "axes_dims", c.axes_dims, source);
  c.axes_lens = json_get<std::vector<int64_t>>(j, "axes_lens", c.axes_lens, source);
  c.validate(source);
  return c;
}

nlohmann::json ZImageConfig::to_diffusers_json() const {
  return nlohmann::json{{"_class_name", "ZImageTransformer2DModel"},
                        {"all_patch_size", nlohmann::json::array({patch_size})},
                        {"all_f_patch_size", nlohmann::json::array({f_patch_size})},
                        {"in_channels", in_channels},
                        {"dim", dim},
                        {"n_layers", n_layers},
                        {"n_refiner_layers", n_refiner_layers},
                        {"n_heads", n_heads},
                        {"n_kv_heads", n_kv_heads},
                        {"norm_eps", norm_eps},
                        {"qk_norm", qk_norm},
                        {"cap_feat_dim", cap_feat_dim},
                        {"siglip_feat_dim", nullptr},
                        {"rope_theta", rope_theta},
                        {"t_scale", t_scale},
                        {"axes_dims", axes_dims},
                        {"axes_lens", axes_lens}};
}

// ---------------------------------------------------------------------------------------------------- modules

ZImageRMSNormImpl::ZImageRMSNormImpl(int64_t dim, double e, const c10::TensorOptions& opts) : eps(e) {
  weight = register_parameter("weight", torch::empty({dim}, opts));
}

at::Tensor ZImageRMSNormImpl::forward(const at::Tensor& x) {
  auto xf = x.to(at::promote_types(x.scalar_type(), torch::kFloat32));
  auto y = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return y.to(x.scalar_type()) * weight;
}

ZImageAttentionImpl::ZImageAttentionImpl(const ZImageConfig& c, const c10::TensorOptions& opts)
    : heads(c.n_heads), head_dim(c.head_dim()) {
  to_q = register_module("to_q", FluxLinear(c.dim, c.dim, false, opts));
  to_k = register_module("to_k", FluxLinear(c.dim, c.dim, false, opts));
  to_v = register_module("to_v", FluxLinear(c.dim, c.dim, false, opts));
  auto out = register_module("to_out", torch::nn::ModuleList());
  to_out0 = FluxLinear(c.dim, c.dim, false, opts);
  out->push_back(to_out0);
  if (c.qk_norm) {
    norm_q = register_module("norm_q", ZImageRMSNorm(head_dim, 1e-5, opts));  // diffusers Attention(eps=1e-5)
    norm_k = register_module("norm_k", ZImageRMSNorm(head_dim, 1e-5, opts));
  }
}

at::Tensor ZImageAttentionImpl::forward(const at::Tensor& x, const RopeTables& pe, const at::Tensor& mask) {
  int64_t B = x.size(0), L = x.size(1);
  auto q = to_q->forward(x).view({B, L, heads, head_dim});
  auto k = to_k->forward(x).view({B, L, heads, head_dim});
  auto v = to_v->forward(x).view({B, L, heads, head_dim}).transpose(1, 2);
  if (norm_q) {
    q = norm_q->forward(q);
    k = norm_k->forward(k);
  }
  q = apply_flux_rope(q.transpose(1, 2), pe);
  k = apply_flux_rope(k.transpose(1, 2), pe);
  auto o = at::scaled_dot_product_attention(q, k, v, mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt);
  return to_out0->forward(o.transpose(1, 2).reshape({B, L, heads * head_dim}));
}

ZImageFeedForwardImpl::ZImageFeedForwardImpl(int64_t dim, int64_t hidden, const c10::TensorOptions& opts) {
  w1 = register_module("w1", FluxLinear(dim, hidden, false, opts));
  w2 = register_module("w2", FluxLinear(hidden, dim, false, opts));
  w3 = register_module("w3", FluxLinear(dim, hidden, false, opts));
}

at::Tensor ZImageFeedForwardImpl::forward(const at::Tensor& x) {
  return w2->forward(torch::silu(w1->forward(x)) * w3->forward(x));
}

ZImageBlockImpl::ZImageBlockImpl(const ZImageConfig& c, bool mod, const c10::TensorOptions& opts) : modulation(mod) {
  attention = register_module("attention", ZImageAttention(c, opts));
  feed_forward = register_module("feed_forward", ZImageFeedForward(c.dim, c.ffn_hidden(), opts));
  attention_norm1 = register_module("attention_norm1", ZImageRMSNorm(c.dim, c.norm_eps, opts));
  ffn_norm1 = register_module("ffn_norm1", ZImageRMSNorm(c.dim, c.norm_eps, opts));
  attention_norm2 = register_module("attention_norm2", ZImageRMSNorm(c.dim, c.norm_eps, opts));
  ffn_norm2 = register_module("ffn_norm2", ZImageRMSNorm(c.dim, c.norm_eps, opts));
  if (modulation) {
    auto seq = register_module("adaLN_modulation", torch::nn::ModuleList());
    ada = FluxLinear(c.adaln_dim(), 4 * c.dim, true, opts);
    seq->push_back(ada);
  }
}

at::Tensor ZImageBlockImpl::forward(const at::Tensor& x, const RopeTables& pe, const at::Tensor& mask,
                                    const at::Tensor& adaln) {
  if (!modulation) {
    auto h = x + attention_norm2->forward(attention->forward(attention_norm1->forward(x), pe, mask));
    return h + ffn_norm2->forward(feed_forward->forward(ffn_norm1->forward(h)));
  }
  if (!adaln.defined()) fail("ZImageBlock: a modulated block needs the timestep embedding (a bug in iomm)");
  auto m = ada->forward(adaln).unsqueeze(1).chunk(4, 2);  // scale_msa, gate_msa, scale_mlp, gate_mlp
  auto scale_msa = 1.0 + m[0], gate_msa = m[1].tanh(), scale_mlp = 1.0 + m[2], gate_mlp = m[3].tanh();
  auto attn_out = attention->forward(attention_norm1->forward(x) * scale_msa, pe, mask);
  auto h = x + gate_msa * attention_norm2->forward(attn_out);
  return h + gate_mlp * ffn_norm2->forward(feed_forward->forward(ffn_norm1->forward(h) * scale_mlp));
}

ZImageFinalLayerImpl::ZImageFinalLayerImpl(int64_t dim, int64_t adaln_dim, int64_t out,
                                           const c10::TensorOptions& opts) {
  linear = register_module("linear", FluxLinear(dim, out, true, opts));
  // diffusers: adaLN_modulation = Sequential(SiLU, Linear) -> the Linear is child "1".
  auto seq = register_module("adaLN_modulation", torch::nn::ModuleList());
  seq->push_back(torch::nn::SiLU());
  ada = FluxLinear(adaln_dim, dim, true, opts);
  seq->push_back(ada);
}

at::Tensor ZImageFinalLayerImpl::forward(const at::Tensor& x, const at::Tensor& c) {
  auto scale = (1.0 + ada->forward(torch::silu(c))).unsqueeze(1);
  auto n = at::layer_norm(x, {x.size(-1)}, {}, {}, 1e-6);
  return linear->forward(n * scale);
}

ZImageDiTImpl::ZImageDiTImpl(const ZImageConfig& c, const c10::TensorOptions& opts) : config(c) {
  c.validate("ZImageDiT");
  auto xe = register_module("all_x_embedder", std::make_shared<torch::nn::Module>());
  x_embed = xe->register_module(c.patch_key(), FluxLinear(c.patch_dim(), c.dim, true, opts));
  auto fl = register_module("all_final_layer", std::make_shared<torch::nn::Module>());
  final_layer = fl->register_module(c.patch_key(), ZImageFinalLayer(c.dim, c.adaln_dim(), c.patch_dim(), opts));
  noise_refiner = register_module("noise_refiner", torch::nn::ModuleList());
  context_refiner = register_module("context_refiner", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.n_refiner_layers; ++i) {
    noise_refiner->push_back(ZImageBlock(c, true, opts));
    context_refiner->push_back(ZImageBlock(c, false, opts));
  }
  auto te = register_module("t_embedder", std::make_shared<torch::nn::Module>());
  auto mlp = te->register_module("mlp", torch::nn::ModuleList());
  t_mlp0 = FluxLinear(ZImageConfig::kAdaLNEmbedDim, ZImageConfig::kTimeMidDim, true, opts);
  t_mlp2 = FluxLinear(ZImageConfig::kTimeMidDim, c.adaln_dim(), true, opts);
  mlp->push_back(t_mlp0);
  mlp->push_back(torch::nn::SiLU());
  mlp->push_back(t_mlp2);
  auto ce = register_module("cap_embedder", torch::nn::ModuleList());
  cap_norm = ZImageRMSNorm(c.cap_feat_dim, c.norm_eps, opts);
  cap_linear = FluxLinear(c.cap_feat_dim, c.dim, true, opts);
  ce->push_back(cap_norm);
  ce->push_back(cap_linear);
  x_pad_token = register_parameter("x_pad_token", torch::empty({1, c.dim}, opts));
  cap_pad_token = register_parameter("cap_pad_token", torch::empty({1, c.dim}, opts));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.n_layers; ++i) layers->push_back(ZImageBlock(c, true, opts));
}

void ZImageDiTImpl::init_weights(uint64_t seed) {
  if (x_pad_token.device().is_meta()) return;
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  for (auto& p : named_parameters(true)) {
    const auto& n = p.key();
    auto& t = p.value();
    auto has = [&](const char* s) { return n.find(s) != std::string::npos; };
    bool norm = has("norm") && n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0 && t.dim() == 1;
    bool zero = has("adaLN_modulation.") || n.rfind("all_final_layer.", 0) == 0;
    if (norm || n == "cap_embedder.0.weight") t.fill_(1.0);
    else if (zero || t.dim() == 1) t.zero_();
    else if (n == "x_pad_token" || n == "cap_pad_token" || n.rfind("t_embedder.", 0) == 0) t.normal_(0.0, 0.02);
    else torch::nn::init::xavier_uniform_(t);
  }
}

RopeTables zimage_rope(const at::Tensor& ids, const ZImageConfig& c) {
  if (ids.size(-1) != static_cast<int64_t>(c.axes_dims.size()))
    fail("position ids have {} axes but the model has {} RoPE axes", ids.size(-1), c.axes_dims.size());
  auto pos = ids.to(torch::kFloat64);
  std::vector<at::Tensor> angles;
  for (size_t a = 0; a < c.axes_dims.size(); ++a) {
    int64_t d = c.axes_dims[a];
    auto pa = pos.select(-1, static_cast<int64_t>(a));
    double mx = pa.numel() ? pa.max().item<double>() : 0.0;
    if (mx >= static_cast<double>(c.axes_lens[a]))
      fail("RoPE position {} on axis {} is outside axes_lens[{}] = {} (the reference's table); use a shorter "
           "condition / smaller latent or a larger axes_lens",
           static_cast<int64_t>(mx), a, a, c.axes_lens[a]);
    auto expo = torch::arange(0, d, 2, torch::dtype(torch::kFloat64).device(ids.device())) / static_cast<double>(d);
    auto freqs = 1.0 / torch::pow(c.rope_theta, expo);
    angles.push_back(pa.unsqueeze(-1) * freqs);
  }
  // The reference rounds the angles to fp32 first, then takes cos/sin in fp32 (torch.polar on complex64).
  auto ang = torch::cat(angles, -1).to(torch::kFloat32);
  if (ang.dim() == 2) ang = ang.unsqueeze(0);
  return {ang.cos(), ang.sin()};
}

at::Tensor ZImageDiTImpl::forward(const ZImageInput& in) {
  const auto& c = config;
  auto wdt = x_pad_token.scalar_type();
  auto dev = x_pad_token.device();
  if (!in.x.defined() || (in.x.dim() != 4 && in.x.dim() != 5))
    fail("zimage: x must be [B, C, H, W] or [B, C, F, H, W] latents");
  bool four = in.x.dim() == 4;
  auto x = (four ? in.x.unsqueeze(2) : in.x).to(dev, wdt);
  int64_t B = x.size(0), C = x.size(1), F = x.size(2), H = x.size(3), W = x.size(4);
  int64_t p = c.patch_size, pf = c.f_patch_size;
  if (C != c.in_channels) fail("zimage: x has {} channels but the model has in_channels = {}", C, c.in_channels);
  if (H % p || W % p || F % pf)
    fail("zimage: latent {}x{}x{} is not a multiple of the patch size {} (frames {})", F, H, W, p, pf);
  int64_t Ft = F / pf, Ht = H / p, Wt = W / p, N = Ft * Ht * Wt;
  const int64_t M = ZImageConfig::kSeqMultipleOf;
  int64_t Npad = (M - N % M) % M, Nx = N + Npad;

  if (!in.cap_feats.defined() || in.cap_feats.dim() != 3 || in.cap_feats.size(0) != B ||
      in.cap_feats.size(2) != c.cap_feat_dim)
    fail("zimage: cap_feats must be [B={}, L, cap_feat_dim={}]", B, c.cap_feat_dim);
  int64_t L = in.cap_feats.size(1);
  at::Tensor mask = in.cap_mask.defined() ? in.cap_mask.to(torch::kCPU).to(torch::kBool)
                                          : torch::ones({B, L}, torch::kBool);
  if (mask.dim() != 2 || mask.size(0) != B || mask.size(1) != L)
    fail("zimage: cap_mask must be [B={}, L={}] (true = real token)", B, L);
  auto t = in.t.defined() ? in.t.to(dev).reshape({-1}) : at::Tensor();
  if (!t.defined() || (t.numel() != B && t.numel() != 1)) fail("zimage: t must be [B] or a scalar");
  if (t.numel() == 1 && B > 1) t = t.expand({B});

  // Timestep embedding (fp32 sinusoid, cast to the weights' dtype).
  auto tf = flux_timestep_embedding(t.to(torch::kFloat32) * c.t_scale, ZImageConfig::kAdaLNEmbedDim);
  auto adaln = t_mlp2->forward(torch::silu(t_mlp0->forward(tf.to(wdt))));

  // Image tokens: channel-last patches, embedded, then x_pad_token up to a multiple of 32.
  auto patches = x.view({B, C, Ft, pf, Ht, p, Wt, p}).permute({0, 2, 4, 6, 3, 5, 7, 1}).reshape({B, N, c.patch_dim()});
  auto xs = x_embed->forward(patches);
  if (Npad) xs = torch::cat({xs, x_pad_token.unsqueeze(0).expand({B, Npad, c.dim})}, 1);

  // Caption tokens: the real ones (in order), cap_pad_token up to a multiple of 32, zeros up to the batch maximum.
  auto ce = cap_linear->forward(cap_norm->forward(in.cap_feats.to(dev, wdt)));
  std::vector<int64_t> len(B), total(B);
  int64_t Lc = 0;
  for (int64_t b = 0; b < B; ++b) {
    len[b] = mask[b].sum().item<int64_t>();
    if (len[b] == 0) fail("zimage: sample {} has no real caption token (cap_mask is all false)", b);
    total[b] = len[b] + (M - len[b] % M) % M;
    Lc = std::max(Lc, total[b]);
  }
  std::vector<at::Tensor> caps;
  for (int64_t b = 0; b < B; ++b) {
    auto idx = torch::nonzero(mask[b]).flatten().to(dev);
    std::vector<at::Tensor> parts = {ce[b].index_select(0, idx)};
    if (total[b] > len[b]) parts.push_back(cap_pad_token.expand({total[b] - len[b], c.dim}));
    if (Lc > total[b]) parts.push_back(torch::zeros({Lc - total[b], c.dim}, ce.options()));
    caps.push_back(torch::cat(parts, 0));
  }
  auto cs = torch::stack(caps, 0);

  // Position ids of the unified [image (Nx); caption (Lc)] layout.
  auto ids = torch::zeros({B, Nx + Lc, 3}, torch::kFloat64);
  auto grid_f = torch::arange(Ft, torch::kFloat64).view({Ft, 1, 1}).expand({Ft, Ht, Wt}).reshape({N});
  auto grid_h = torch::arange(Ht, torch::kFloat64).view({1, Ht, 1}).expand({Ft, Ht, Wt}).reshape({N});
  auto grid_w = torch::arange(Wt, torch::kFloat64).view({1, 1, Wt}).expand({Ft, Ht, Wt}).reshape({N});
  for (int64_t b = 0; b < B; ++b) {
    auto img = ids[b].narrow(0, 0, N);
    img.select(1, 0).copy_(grid_f + static_cast<double>(total[b] + 1));
    img.select(1, 1).copy_(grid_h);
    img.select(1, 2).copy_(grid_w);
    ids[b].narrow(0, Nx, total[b]).select(1, 0).copy_(torch::arange(1, total[b] + 1, torch::kFloat64));
  }
  auto pe = zimage_rope(ids.to(dev), c);
  auto slice = [](const RopeTables& r, int64_t s, int64_t n) {
    return RopeTables{r.cos.narrow(1, s, n), r.sin.narrow(1, s, n)};
  };
  auto pe_x = slice(pe, 0, Nx), pe_cap = slice(pe, Nx, Lc);

  // Key masks (undefined when every sample has the same length, as in the reference).
  bool ragged = false;
  for (int64_t b = 0; b < B; ++b) ragged |= total[b] != Lc;
  at::Tensor cap_mask, uni_mask;
  if (ragged) {
    auto tt = torch::tensor(total, torch::kInt64).unsqueeze(1);
    cap_mask = (torch::arange(Lc, torch::kInt64).unsqueeze(0) < tt).view({B, 1, 1, Lc}).to(dev);
    uni_mask = (torch::arange(Nx + Lc, torch::kInt64).unsqueeze(0) < tt + Nx).view({B, 1, 1, Nx + Lc}).to(dev);
  }

  int64_t index = 0;
  auto run = [&](torch::nn::Module& m, const at::Tensor& x, const RopeTables& r, const at::Tensor& mask,
                 const at::Tensor& ada) {
    auto* b = m.as<ZImageBlock>();
    if (!checkpoint_block(checkpoint_every, index++)) return b->forward(x, r, mask, ada);
    return checkpoint([b](const std::vector<at::Tensor>& a) {
      return std::vector<at::Tensor>{b->forward(a[0], RopeTables{a[1], a[2]}, a[3], a[4])};
    }, {x, r.cos, r.sin, mask, ada})[0];
  };
  for (auto& m : *noise_refiner) xs = run(*m, xs, pe_x, at::Tensor(), adaln);
  for (auto& m : *context_refiner) cs = run(*m, cs, pe_cap, cap_mask, at::Tensor());
  auto u = torch::cat({xs, cs}, 1);
  for (auto& m : *layers) u = run(*m, u, pe, uni_mask, adaln);
  auto out = final_layer->forward(u, adaln).narrow(1, 0, N);  // image tokens come first

  auto y = out.reshape({B, Ft, Ht, Wt, pf, p, p, C}).permute({0, 7, 1, 4, 2, 5, 3, 6}).reshape({B, C, F, H, W});
  return four ? y.squeeze(2) : y;
}

at::Tensor zimage_velocity(ZImageDiT& model, const at::Tensor& x, const at::Tensor& t_iomm, const at::Tensor& cap_feats,
                           const at::Tensor& cap_mask) {
  ZImageInput in;
  in.x = x;
  in.t = 1.0 - t_iomm;
  in.cap_feats = cap_feats;
  in.cap_mask = cap_mask;
  return -model->forward(in);
}

// ---------------------------------------------------------------------------------------------------- sizes, loading

int64_t zimage_parameter_count(const ZImageConfig& c) {
  ZImageDiT m(c, torch::TensorOptions().device(torch::kMeta).dtype(torch::kFloat32));
  return count_parameters(*m);
}

ZImageDiT load_zimage(const std::string& path, const std::string& device, const std::string& dtype, bool freeze) {
  if (!fs::is_directory(path))
    fail("{}: not a directory; pass a diffusers ZImageTransformer2DModel directory (config.json + *.safetensors) "
         "or an iomm directory with config.toml",
         path);
  fs::path dir(path);
  ZImageConfig cfg;
  if (fs::exists(dir / "config.json")) {
    std::string p = (dir / "config.json").string();
    cfg = ZImageConfig::from_json(read_json_file(p), p);
  } else if (fs::exists(dir / "config.toml")) {
    auto c = Config::load((dir / "config.toml").string());
    cfg = ZImageConfig::from_config(c, "generator");
  } else {
    fail("{}: has neither config.json (diffusers ZImageTransformer2DModel) nor config.toml ([generator] table)", path);
  }
  auto tensors = load_tensors(path);
  if (is_original_zimage(tensors)) tensors = zimage_from_original(tensors);
  ZImageDiT m(cfg, torch::TensorOptions().device(torch::Device(device)).dtype(dtype_from_name(dtype)));
  load_frozen(*m, tensors, path, device, dtype, /*trainable=*/!freeze);
  return m;
}

ForwardComponent zimage_forward_component() {
  ForwardComponent c;
  c.name = "zimage-dit";
  c.help = "Z-Image S3-DiT (diffusers ZImageTransformer2DModel forward, basic mode): x [B,C,(F,)H,W], t [B] "
           "(1 - sigma), cap_feats [B,L,C] [+ cap_mask [B,L]] -> sample (x's shape; the negative velocity)";
  c.inputs = {"x", "t", "cap_feats"};
  c.optional_inputs = {"cap_mask"};
  c.outputs = {"sample"};
  c.load = [](const ForwardOptions& opt) {
    auto m = load_zimage(opt.model_dir, opt.device, opt.dtype);
    return LoadedComponent{m->parameters(), [m](const TensorMap& in) mutable {
      ZImageInput x;
      x.x = in.at("x");
      x.t = in.at("t");
      x.cap_feats = in.at("cap_feats");
      if (in.count("cap_mask")) x.cap_mask = in.at("cap_mask");
      return TensorMap{{"sample", m->forward(x).to(torch::kFloat32)}};
    }};
  };
  return c;
}

}  // namespace iomm
