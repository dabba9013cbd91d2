#include "models/mmdit.h"


#include <cmath>
#include <cstring>
#include <filesystem>
#include <regex>
#include <set>

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

void MMDiTConfig::validate(const std::string& source) const {
  auto positive = [&](const char* name, int64_t v) {
    if (v <= 0) fail("{}: {} must be positive (got {})", source, name, v);
  };
  positive("hidden_size", hidden_size);
  positive("num_heads", num_heads);
  positive("in_channels", in_channels);
  positive("out_channels", out_channels);
  positive("context_in_dim", context_in_dim);
  positive("patch_size", patch_size);
  if (depth < 0 || depth_single < 0) fail("{}: depth and depth_single_blocks must be >= 0", source);
  if (hidden_size % num_heads != 0)
    fail("{}: hidden_size {} is not a multiple of num_heads {}", source, hidden_size, num_heads);
  int64_t sum = 0;
  for (auto a : axes_dim) {
    if (a <= 0 || a % 2 != 0) fail("{}: every axes_dim entry must be a positive even number (got {})", source, a);
    sum += a;
  }
  if (sum != head_dim())
    fail("{}: axes_dim sums to {} but head_dim = hidden_size / num_heads = {}; make them equal", source, sum,
         head_dim());
  if (mlp_ratio <= 0) fail("{}: mlp_ratio must be positive", source);
  if (vec_in_dim < 0) fail("{}: vec_in_dim must be >= 0 (0 = no pooled vector)", source);
}

MMDiTConfig MMDiTConfig::from_config(Config& cfg, const std::string& prefix, int64_t default_context_in_dim) {
  MMDiTConfig c;
  auto k = [&](const char* name) { return prefix.empty() ? std::string(name) : prefix + "." + name; };
  c.hidden_size = cfg.get_int(k("hidden_size"), c.hidden_size, 1);
  c.num_heads = cfg.get_int(k("num_heads"), c.num_heads, 1);
  c.depth = cfg.get_int(k("depth"), c.depth, 0);
  c.depth_single = cfg.get_int(k("depth_single_blocks"), c.depth_single, 0);
  c.context_in_dim = cfg.get_int(k("context_in_dim"), default_context_in_dim, 1);
  c.vec_in_dim = cfg.get_int(k("vec_in_dim"), c.vec_in_dim, 0);
  c.mlp_ratio = cfg.get_double(k("mlp_ratio"), c.mlp_ratio, 1e-3, 64.0);
  c.axes_dim = cfg.get_int_list(k("axes_dim"), c.axes_dim);
  c.theta = cfg.get_double(k("theta"), c.theta, 1e-6);
  c.qkv_bias = cfg.get_bool(k("qkv_bias"), c.qkv_bias);
  c.guidance_embed = cfg.get_bool(k("guidance_embed"), c.guidance_embed);
  c.patch_size = cfg.get_int(k("patch_size"), c.patch_size, 1, 16);
  int64_t latent = cfg.get_int(k("latent_channels"), MMDiTConfig{}.latent_channels(), 1);  // FLUX VAE: 16
  c.in_channels = cfg.get_int(k("in_channels"), latent * c.patch_size * c.patch_size, 1);
  c.out_channels = cfg.get_int(k("out_channels"), c.in_channels, 1);
  c.validate(cfg.source() + " [" + prefix + "]");
  return c;
}

MMDiTConfig MMDiTConfig::from_json(const nlohmann::json& j, const std::string& source) {
  MMDiTConfig c;
  bool diffusers = j.contains("_class_name") || j.contains("num_layers") || j.contains("attention_head_dim");
  if (diffusers) {
    auto cls = json_get<std::string>(j, "_class_name", "FluxTransformer2DModel", source);
    if (cls != "FluxTransformer2DModel")
      fail("{}: _class_name is '{}'; the mmdit component loads diffusers FluxTransformer2DModel directories", source,
           cls);
    if (json_get<int64_t>(j, "patch_size", 1, source) != 1)
      fail("{}: patch_size must be 1 (FLUX packs 2x2 patches outside the transformer)", source);
    c.in_channels = json_get<int64_t>(j, "in_channels", 64, source);
    c.out_channels = json_get<int64_t>(j, "out_channels", c.in_channels, source);
    c.depth = json_get<int64_t>(j, "num_layers", 19, source);
    c.depth_single = json_get<int64_t>(j, "num_single_layers", 38, source);
    int64_t hd = json_get<int64_t>(j, "attention_head_dim", 128, source);
    c.num_heads = json_get<int64_t>(j, "num_attention_heads", 24, source);
    c.hidden_size = hd * c.num_heads;
    c.context_in_dim = json_get<int64_t>(j, "joint_attention_dim", 4096, source);
    c.vec_in_dim = json_get<int64_t>(j, "pooled_projection_dim", 768, source);  // diffusers always has text_embedder
    c.guidance_embed = json_get<bool>(j, "guidance_embeds", false, source);
    c.axes_dim = json_get<std::vector<int64_t>>(j, "axes_dims_rope", {16, 56, 56}, source);
    c.theta = 10000.0;
    c.qkv_bias = true;
    c.mlp_ratio = 4.0;
  } else {  // BFL FluxParams
    if (!j.contains("hidden_size") || !j.contains("depth"))
      fail("{}: neither a diffusers FluxTransformer2DModel config (num_layers, attention_head_dim, ...) nor BFL "
           "FluxParams (hidden_size, num_heads, depth, depth_single_blocks, ...)",
           source);
    c.in_channels = json_get<int64_t>(j, "in_channels", 64, source);
    c.out_channels = json_get<int64_t>(j, "out_channels", c.in_channels, source);
    c.hidden_size = json_get<int64_t>(j, "hidden_size", 3072, source);
    c.num_heads = json_get<int64_t>(j, "num_heads", 24, source);
    c.depth = json_get<int64_t>(j, "depth", 19, source);
    c.depth_single = json_get<int64_t>(j, "depth_single_blocks", 38, source);
    c.context_in_dim = json_get<int64_t>(j, "context_in_dim", 4096, source);
    c.vec_in_dim = json_get<int64_t>(j, "vec_in_dim", 0, source);
    c.mlp_ratio = json_get<double>(j, "mlp_ratio", 4.0, source);
    c.axes_dim = json_get<std::vector<int64_t>>(j, "axes_dim", {16, 56, 56}, source);
    c.theta = json_get<double>(j, "theta", 10000.0, source);
    c.qkv_bias = json_get<bool>(j, "qkv_bias", true, source);
    c.guidance_embed = json_get<bool>(j, "guidance_embed", false, source);
  }
  c.patch_size = json_get<int64_t>(j, "iomm_patch_size", 2, source);
  c.validate(source);
  return c;
}

nlohmann::json MMDiTConfig::to_diffusers_json(int64_t pooled_dim_if_absent) const {
  if (theta != 10000.0)
    fail("diffusers' FluxTransformer2DModel has RoPE theta fixed at 10000; this model uses {}: export in bfl format",
         theta);
  if (mlp_ratio != 4.0)
    fail("diffusers' FluxTransformer2DModel has mlp_ratio fixed at 4; this model uses {}: export in bfl format",
         mlp_ratio);
  if (axes_dim.size() != 3) fail("diffusers' FluxTransformer2DModel takes 3 RoPE axes; this model has {}", axes_dim.size());
  nlohmann::json j;
  j["_class_name"] = "FluxTransformer2DModel";
  j["patch_size"] = 1;
  j["in_channels"] = in_channels;
  j["out_channels"] = out_channels;
  j["num_layers"] = depth;
  j["num_single_layers"] = depth_single;
  j["attention_head_dim"] = head_dim();
  j["num_attention_heads"] = num_heads;
  j["joint_attention_dim"] = context_in_dim;
  j["pooled_projection_dim"] = vec_in_dim > 0 ? vec_in_dim : pooled_dim_if_absent;
  j["guidance_embeds"] = guidance_embed;
  j["axes_dims_rope"] = axes_dim;
  return j;
}

nlohmann::json MMDiTConfig::to_bfl_json() const {
  nlohmann::json j;
  j["in_channels"] = in_channels;
  j["out_channels"] = out_channels;
  j["vec_in_dim"] = vec_in_dim;
  j["context_in_dim"] = context_in_dim;
  j["hidden_size"] = hidden_size;
  j["mlp_ratio"] = mlp_ratio;
  j["num_heads"] = num_heads;
  j["depth"] = depth;
  j["depth_single_blocks"] = depth_single;
  j["axes_dim"] = axes_dim;
  j["theta"] = theta;
  j["qkv_bias"] = qkv_bias;
  j["guidance_embed"] = guidance_embed;
  j["iomm_patch_size"] = patch_size;
  return j;
}

static int64_t count_blocks(const std::map<std::string, at::Tensor>& m, const std::string& prefix) {
  int64_t n = 0;
  std::regex re("^" + prefix + R"(\.(\d+)\.)");
  for (auto& [k, v] : m) {
    std::smatch s;
    if (std::regex_search(k, s, re)) n = std::max<int64_t>(n, std::stoll(s[1]) + 1);
  }
  return n;
}

MMDiTConfig MMDiTConfig::infer_from_weights(const std::map<std::string, at::Tensor>& w, const std::string& source) {
  auto need = [&](const std::string& n) -> const at::Tensor& {
    auto it = w.find(n);
    if (it == w.end())
      fail("{}: no tensor '{}' to infer the model size from; give a config.json (FluxParams or diffusers) beside "
           "the weights",
           source, n);
    return it->second;
  };
  MMDiTConfig c;
  c.hidden_size = need("img_in.weight").size(0);
  c.in_channels = need("img_in.weight").size(1);
  c.context_in_dim = need("txt_in.weight").size(1);
  c.out_channels = need("final_layer.linear.weight").size(0);
  c.depth = count_blocks(w, "double_blocks");
  c.depth_single = count_blocks(w, "single_blocks");
  std::string qn = c.depth > 0 ? "double_blocks.0.img_attn.norm.query_norm.scale" : "single_blocks.0.norm.query_norm.scale";
  int64_t hd = need(qn).numel();
  c.num_heads = c.hidden_size / hd;
  if (c.depth > 0) {
    c.mlp_ratio = static_cast<double>(need("double_blocks.0.img_mlp.0.weight").size(0)) / c.hidden_size;
    c.qkv_bias = w.count("double_blocks.0.img_attn.qkv.bias") > 0;
  } else if (c.depth_single > 0) {
    c.mlp_ratio = static_cast<double>(need("single_blocks.0.linear1.weight").size(0) - 3 * c.hidden_size) / c.hidden_size;
  }
  c.vec_in_dim = w.count("vector_in.in_layer.weight") ? w.at("vector_in.in_layer.weight").size(1) : 0;
  c.guidance_embed = w.count("guidance_in.in_layer.weight") > 0;
  if (hd != 128)
    fail("{}: head_dim is {} (not FLUX's 128), so the RoPE axes cannot be inferred; put a config.json (FluxParams "
         "with axes_dim and theta) beside the weights",
         source, hd);
  c.validate(source);
  return c;
}

// ---------------------------------------------------------------------------------------------------- modules

FluxLinearImpl::FluxLinearImpl(int64_t in, int64_t out, bool with_bias, const c10::TensorOptions& opts) {
  weight = register_parameter("weight", torch::empty({out, in}, opts));
  if (with_bias) bias = register_parameter("bias", torch::empty({out}, opts));
}

at::Tensor FluxLinearImpl::forward(const at::Tensor& x) { return at::linear(x, weight, bias); }

FluxRMSNormImpl::FluxRMSNormImpl(int64_t dim, const c10::TensorOptions& opts) {
  scale = register_parameter("scale", torch::empty({dim}, opts));
}

at::Tensor FluxRMSNormImpl::forward(const at::Tensor& x) {
  auto xf = x.to(at::promote_types(x.scalar_type(), torch::kFloat32));  // fp32 statistics (fp64 stays fp64)
  auto y = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + 1e-6);
  return y.to(x.scalar_type()) * scale;
}

QKNormImpl::QKNormImpl(int64_t head_dim, const c10::TensorOptions& opts) {
  query_norm = register_module("query_norm", FluxRMSNorm(head_dim, opts));
  key_norm = register_module("key_norm", FluxRMSNorm(head_dim, opts));
}

MLPEmbedderImpl::MLPEmbedderImpl(int64_t in, int64_t hidden, const c10::TensorOptions& opts) {
  in_layer = register_module("in_layer", FluxLinear(in, hidden, true, opts));
  out_layer = register_module("out_layer", FluxLinear(hidden, hidden, true, opts));
}

at::Tensor MLPEmbedderImpl::forward(const at::Tensor& x) {
  return out_layer->forward(at::silu(in_layer->forward(x)));
}

ModulationImpl::ModulationImpl(int64_t dim, bool is_double, const c10::TensorOptions& opts)
    : multiplier(is_double ? 6 : 3) {
  lin = register_module("lin", FluxLinear(dim, multiplier * dim, true, opts));
}

std::vector<at::Tensor> ModulationImpl::forward(const at::Tensor& vec) {
  return lin->forward(at::silu(vec)).unsqueeze(1).chunk(multiplier, -1);
}

FluxSelfAttentionImpl::FluxSelfAttentionImpl(int64_t dim, int64_t heads, bool qkv_bias,
                                             const c10::TensorOptions& opts) {
  qkv = register_module("qkv", FluxLinear(dim, 3 * dim, qkv_bias, opts));
  norm = register_module("norm", QKNorm(dim / heads, opts));
  proj = register_module("proj", FluxLinear(dim, dim, true, opts));
}

FluxMLPImpl::FluxMLPImpl(int64_t dim, int64_t hidden, const c10::TensorOptions& opts) {
  fc1 = register_module("0", FluxLinear(dim, hidden, true, opts));
  fc2 = register_module("2", FluxLinear(hidden, dim, true, opts));
}

at::Tensor FluxMLPImpl::forward(const at::Tensor& x) { return fc2->forward(at::gelu(fc1->forward(x), "tanh")); }

at::Tensor modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale) {
  auto n = at::layer_norm(x, {x.size(-1)}, {}, {}, 1e-6);
  return (1 + scale) * n + shift;
}

// [B, L, H*Dh] -> q, k, v each [B, H, L, Dh], QK-normed (FLUX's order: norm, then cast to v's dtype).
// [B, L, H*Dh] -> q, k, v each [B, H, L, Dh], QK-normed (FLUX's order: norm, then cast to v's dtype).
// unbind, not t[0..2]: each select's backward zero-fills and copies a full qkv-sized gradient; unbind's is one stack.
// (Unbinding [B, L, 3, H, Dh] along the 3 instead, to skip the permute copy in backward, measured slower: the
// strided stack costs more than the copy it saves.)
static std::array<at::Tensor, 3> split_qkv(const at::Tensor& qkv, int64_t heads, int64_t head_dim, QKNormImpl& norm) {
  int64_t B = qkv.size(0), L = qkv.size(1);
  auto t = qkv.view({B, L, 3, heads, head_dim}).permute({2, 0, 3, 1, 4}).unbind(0);
  auto q = norm.query_norm->forward(t[0]).to(t[2].scalar_type());
  auto k = norm.key_norm->forward(t[1]).to(t[2].scalar_type());
  return {q, k, t[2]};
}

at::Tensor flux_timestep_embedding(const at::Tensor& t, int64_t dim, double max_period) {
  int64_t half = dim / 2;
  auto freqs = torch::exp(-std::log(max_period) *
                          torch::arange(0, half, torch::dtype(torch::kFloat32).device(t.device())) /
                          static_cast<double>(half));
  auto args = t.reshape({-1, 1}).to(torch::kFloat32) * freqs.unsqueeze(0);
  auto emb = torch::cat({torch::cos(args), torch::sin(args)}, -1);
  if (dim % 2) emb = torch::cat({emb, torch::zeros_like(emb.narrow(-1, 0, 1))}, -1);
  return emb;
}

RopeTables flux_rope(const at::Tensor& ids, const std::vector<int64_t>& axes_dim, double theta) {
  if (ids.size(-1) != static_cast<int64_t>(axes_dim.size()))
    fail("position ids have {} axes but the model has {} RoPE axes (axes_dim)", ids.size(-1), axes_dim.size());
  auto pos = ids.to(torch::kFloat32).to(torch::kFloat64);
  std::vector<at::Tensor> angles;
  for (size_t a = 0; a < axes_dim.size(); ++a) {
    int64_t d = axes_dim[a];
    auto scale = torch::arange(0, d, 2, torch::dtype(torch::kFloat64).device(ids.device())) / static_cast<double>(d);
    auto omega = 1.0 / torch::pow(theta, scale);
    angles.push_back(pos.select(-1, static_cast<int64_t>(a)).unsqueeze(-1) * omega);
  }
  auto ang = torch::cat(angles, -1);
  if (ang.dim() == 2) ang = ang.unsqueeze(0);  // [1, L, Dh/2]
  return {ang.cos().to(torch::kFloat32), ang.sin().to(torch::kFloat32)};
}

at::Tensor apply_flux_rope(const at::Tensor& x, const RopeTables& pe) {
  auto s = x.sizes().vec();
  auto xf = x.to(at::promote_types(x.scalar_type(), torch::kFloat32)).reshape({s[0], s[1], s[2], s[3] / 2, 2});
  auto pair = xf.unbind(-1);  // not two selects: their backward zero-fills a full-size gradient each
  const auto &x0 = pair[0], &x1 = pair[1];
  auto c = pe.cos.unsqueeze(1), sn = pe.sin.unsqueeze(1);  // [Bp, 1, L, Dh/2]
  auto out = torch::stack({c * x0 - sn * x1, sn * x0 + c * x1}, -1).flatten(3);
  return out.to(x.scalar_type());
}

at::Tensor flux_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const RopeTables& pe,
                          const at::Tensor& mask) {
  auto qr = apply_flux_rope(q, pe), kr = apply_flux_rope(k, pe);
  auto o = at::scaled_dot_product_attention(qr, kr, v, mask.defined() ? std::optional<at::Tensor>(mask) : std::nullopt);
  int64_t B = o.size(0), H = o.size(1), L = o.size(2), D = o.size(3);
  return o.transpose(1, 2).reshape({B, L, H * D});
}

DoubleStreamBlockImpl::DoubleStreamBlockImpl(const MMDiTConfig& c, const c10::TensorOptions& opts)
    : heads(c.num_heads), head_dim(c.head_dim()) {
  img_mod = register_module("img_mod", Modulation(c.hidden_size, true, opts));
  img_attn = register_module("img_attn", FluxSelfAttention(c.hidden_size, c.num_heads, c.qkv_bias, opts));
  img_mlp = register_module("img_mlp", FluxMLP(c.hidden_size, c.mlp_hidden(), opts));
  txt_mod = register_module("txt_mod", Modulation(c.hidden_size, true, opts));
  txt_attn = register_module("txt_attn", FluxSelfAttention(c.hidden_size, c.num_heads, c.qkv_bias, opts));
  txt_mlp = register_module("txt_mlp", FluxMLP(c.hidden_size, c.mlp_hidden(), opts));
}

std::pair<at::Tensor, at::Tensor> DoubleStreamBlockImpl::forward(const at::Tensor& img, const at::Tensor& txt,
                                                                 const at::Tensor& vec, const RopeTables& pe,
                                                                 const at::Tensor& mask) {
  auto im = img_mod->forward(vec), tm = txt_mod->forward(vec);  // shift1, scale1, gate1, shift2, scale2, gate2
  auto iq = split_qkv(img_attn->qkv->forward(modulate(img, im[0], im[1])), heads, head_dim, *img_attn->norm);
  auto tq = split_qkv(txt_attn->qkv->forward(modulate(txt, tm[0], tm[1])), heads, head_dim, *txt_attn->norm);
  auto q = torch::cat({tq[0], iq[0]}, 2), k = torch::cat({tq[1], iq[1]}, 2), v = torch::cat({tq[2], iq[2]}, 2);
  auto attn = flux_attention(q, k, v, pe, mask);
  int64_t L = txt.size(1);
  auto parts = attn.split_with_sizes({L, attn.size(1) - L}, 1);  // one cat in backward, not two zero-filled slices
  const auto &txt_a = parts[0], &img_a = parts[1];

  auto img_out = img + im[2] * img_attn->proj->forward(img_a);
  img_out = img_out + im[5] * img_mlp->forward(modulate(img_out, im[3], im[4]));
  auto txt_out = txt + tm[2] * txt_attn->proj->forward(txt_a);
  txt_out = txt_out + tm[5] * txt_mlp->forward(modulate(txt_out, tm[3], tm[4]));
  return {img_out, txt_out};
}

SingleStreamBlockImpl::SingleStreamBlockImpl(const MMDiTConfig& c, const c10::TensorOptions& opts)
    : hidden(c.hidden_size), mlp_hidden(c.mlp_hidden()), heads(c.num_heads), head_dim(c.head_dim()) {
  // FLUX's linear1 always has a bias (its qkv part included); qkv_bias applies to the double blocks' qkv only.
  linear1 = register_module("linear1", FluxLinear(hidden, 3 * hidden + mlp_hidden, true, opts));
  linear2 = register_module("linear2", FluxLinear(hidden + mlp_hidden, hidden, true, opts));
  norm = register_module("norm", QKNorm(head_dim, opts));
  modulation = register_module("modulation", Modulation(hidden, false, opts));
}

at::Tensor SingleStreamBlockImpl::forward(const at::Tensor& x, const at::Tensor& vec, const RopeTables& pe,
                                          const at::Tensor& mask) {
  auto m = modulation->forward(vec);  // shift, scale, gate
  auto h = linear1->forward(modulate(x, m[0], m[1]));
  auto parts = h.split_with_sizes({3 * hidden, mlp_hidden}, -1);  // qkv | mlp (one cat in backward)
  const auto &qkv = parts[0], &mlp = parts[1];
  auto t = split_qkv(qkv, heads, head_dim, *norm);
  auto attn = flux_attention(t[0], t[1], t[2], pe, mask);
  auto out = linear2->forward(torch::cat({attn, at::gelu(mlp, "tanh")}, 2));
  return x + m[2] * out;
}

LastLayerImpl::LastLayerImpl(int64_t dim, int64_t out, const c10::TensorOptions& opts) {
  linear = register_module("linear", FluxLinear(dim, out, true, opts));
  ada_lin = FluxLinear(dim, 2 * dim, true, opts);
  auto holder = std::make_shared<torch::nn::Module>();
  holder->register_module("1", ada_lin);  // BFL: adaLN_modulation = Sequential(SiLU, Linear)
  register_module("adaLN_modulation", holder);
}

at::Tensor LastLayerImpl::forward(const at::Tensor& x, const at::Tensor& vec) {
  auto ss = ada_lin->forward(at::silu(vec)).chunk(2, 1);  // shift, scale
  auto n = at::layer_norm(x, {x.size(-1)}, {}, {}, 1e-6);
  return linear->forward((1 + ss[1].unsqueeze(1)) * n + ss[0].unsqueeze(1));
}

MMDiTImpl::MMDiTImpl(const MMDiTConfig& c, const c10::TensorOptions& opts) : config(c) {
  c.validate("MMDiT config");
  int64_t D = c.hidden_size;
  img_in = register_module("img_in", FluxLinear(c.in_channels, D, true, opts));
  time_in = register_module("time_in", MLPEmbedder(256, D, opts));
  if (c.vec_in_dim > 0) vector_in = register_module("vector_in", MLPEmbedder(c.vec_in_dim, D, opts));
  if (c.guidance_embed) guidance_in = register_module("guidance_in", MLPEmbedder(256, D, opts));
  txt_in = register_module("txt_in", FluxLinear(c.context_in_dim, D, true, opts));
  double_blocks = register_module("double_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.depth; ++i) double_blocks->push_back(DoubleStreamBlock(c, opts));
  single_blocks = register_module("single_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.depth_single; ++i) single_blocks->push_back(SingleStreamBlock(c, opts));
  final_layer = register_module("final_layer", LastLayer(D, c.out_channels, opts));
}

RopeTables MMDiTImpl::rope(const at::Tensor& ids) const { return flux_rope(ids, config.axes_dim, config.theta); }

static std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

at::Tensor MMDiTImpl::forward(const MMDiTInput& in) {
  const auto& c = config;
  auto dt = img_in->weight.scalar_type();
  auto dev = img_in->weight.device();
  if (!in.img.defined() || !in.txt.defined() || !in.timesteps.defined() || !in.img_ids.defined() ||
      !in.txt_ids.defined())
    fail("MMDiT forward needs img, img_ids, txt, txt_ids and timesteps");
  if (in.img.dim() != 3 || in.img.size(2) != c.in_channels)
    fail("MMDiT: img must be [B, N, {}] packed latent tokens; got {}", c.in_channels, shape_str(in.img));
  if (in.txt.dim() != 3 || in.txt.size(2) != c.context_in_dim)
    fail("MMDiT: txt must be [B, L, {}] (context_in_dim); got {}", c.context_in_dim, shape_str(in.txt));
  int64_t B = in.img.size(0), N = in.img.size(1), L = in.txt.size(1);
  if (in.txt.size(0) != B) fail("MMDiT: img has batch {} but txt has {}", B, in.txt.size(0));
  if (vector_in && !in.y.defined())
    fail("MMDiT: this model has vector_in (vec_in_dim {}): give the pooled vector (pooled_projections)", c.vec_in_dim);
  if (!vector_in && in.y.defined())
    fail("MMDiT: this model has no vector_in (vec_in_dim 0): do not give a pooled vector (pooled_projections)");
  if (c.guidance_embed && !in.guidance.defined())
    fail("MMDiT: this model is guidance-distilled (guidance_embed): give the guidance scale");
  if (!c.guidance_embed && in.guidance.defined())
    fail("MMDiT: this model has no guidance embedding (guidance_embed false): do not give a guidance scale");

  auto img = img_in->forward(in.img.to(dev, dt));
  auto txt = txt_in->forward(in.txt.to(dev, dt));
  auto t = in.timesteps.to(dev).reshape({-1}).to(dt);
  if (t.numel() == 1 && B > 1) t = t.expand({B});
  auto vec = time_in->forward(flux_timestep_embedding(t * 1000).to(dt));
  if (guidance_in) {
    auto g = in.guidance.to(dev).reshape({-1}).to(dt);
    if (g.numel() == 1 && B > 1) g = g.expand({B});
    vec = vec + guidance_in->forward(flux_timestep_embedding(g * 1000).to(dt));
  }
  if (vector_in) vec = vec + vector_in->forward(in.y.to(dev, dt));

  auto txt_ids = in.txt_ids.to(dev), img_ids = in.img_ids.to(dev);
  if (txt_ids.dim() != img_ids.dim()) {  // one batched, one not: broadcast the shared one
    if (txt_ids.dim() == 2) txt_ids = txt_ids.unsqueeze(0).expand({img_ids.size(0), -1, -1});
    else img_ids = img_ids.unsqueeze(0).expand({txt_ids.size(0), -1, -1});
  }
  if (img_ids.size(-2) != N || txt_ids.size(-2) != L)
    fail("MMDiT: img_ids has {} positions for {} image tokens, txt_ids {} for {} txt tokens", img_ids.size(-2), N,
         txt_ids.size(-2), L);
  auto pe = rope(torch::cat({txt_ids, img_ids}, -2));

  at::Tensor mask;
  if (in.txt_mask.defined()) {
    auto m = in.txt_mask.to(dev).to(torch::kBool);
    if (m.dim() != 2 || m.size(0) != B || m.size(1) != L)
      fail("MMDiT: txt_mask must be [B, L] = [{}, {}]; got {}", B, L, shape_str(m));
    mask = torch::cat({m, torch::ones({B, N}, m.options())}, 1).view({B, 1, 1, L + N});
  }

  int64_t index = 0;
  for (auto& blk : *double_blocks) {
    auto* b = blk->as<DoubleStreamBlockImpl>();
    if (checkpoint_block(checkpoint_every, index++)) {
      auto r = checkpoint([b](const std::vector<at::Tensor>& a) {
        auto o = b->forward(a[0], a[1], a[2], RopeTables{a[3], a[4]}, a[5]);
        return std::vector<at::Tensor>{o.first, o.second};
      }, {img, txt, vec, pe.cos, pe.sin, mask});
      img = r[0], txt = r[1];
    } else {
      std::tie(img, txt) = b->forward(img, txt, vec, pe, mask);
    }
  }
  auto x = torch::cat({txt, img}, 1);
  for (auto& blk : *single_blocks) {
    auto* b = blk->as<SingleStreamBlockImpl>();
    if (checkpoint_block(checkpoint_every, index++))
      x = checkpoint([b](const std::vector<at::Tensor>& a) {
        return std::vector<at::Tensor>{b->forward(a[0], a[1], RopeTables{a[2], a[3]}, a[4])};
      }, {x, vec, pe.cos, pe.sin, mask})[0];
    else
      x = b->forward(x, vec, pe, mask);
  }
  return final_layer->forward(x.narrow(1, L, N), vec);
}

void MMDiTImpl::init_weights(uint64_t seed) {
  if (img_in->weight.device().is_meta()) return;
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  for (auto& p : named_parameters(true)) {
    const auto& n = p.key();
    auto& t = p.value();
    auto ends = [&](const char* s) { return n.size() >= strlen(s) && n.compare(n.size() - strlen(s), strlen(s), s) == 0; };
    bool zero_module = n.find("_mod.lin.") != std::string::npos || n.find("modulation.lin.") != std::string::npos ||
                       n.find("final_layer.") == 0;
    bool embedder = n.find("time_in.") == 0 || n.find("vector_in.") == 0 || n.find("guidance_in.") == 0;
    if (ends(".scale")) t.fill_(1.0);
    else if (zero_module || ends(".bias")) t.zero_();
    else if (embedder) t.normal_(0.0, 0.02);
    else torch::nn::init::xavier_uniform_(t);
  }
}

// ---------------------------------------------------------------------------------------------------- packing

at::Tensor pack_latents(const at::Tensor& x, int64_t p) {
  int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  if (H % p || W % p) fail("pack_latents: latent {}x{} is not a multiple of the patch size {}", H, W, p);
  return x.reshape({B, C, H / p, p, W / p, p}).permute({0, 2, 4, 1, 3, 5}).reshape({B, (H / p) * (W / p), C * p * p});
}

at::Tensor unpack_latents(const at::Tensor& t, int64_t H, int64_t W, int64_t p) {
  int64_t B = t.size(0), C = t.size(2) / (p * p);
  if (t.size(1) != (H / p) * (W / p))
    fail("unpack_latents: {} tokens do not form a {}x{} latent with patch {}", t.size(1), H, W, p);
  return t.reshape({B, H / p, W / p, C, p, p}).permute({0, 3, 1, 4, 2, 5}).reshape({B, C, H, W});
}

at::Tensor image_position_ids(int64_t H, int64_t W, int64_t p, int64_t axes) {
  int64_t h = H / p, w = W / p;
  auto ids = torch::zeros({h, w, axes}, torch::kFloat32);
  ids.select(-1, 1).add_(torch::arange(h, torch::kFloat32).unsqueeze(1));
  ids.select(-1, 2).add_(torch::arange(w, torch::kFloat32).unsqueeze(0));
  return ids.view({h * w, axes});
}

// ---------------------------------------------------------------------------------------------------- sizes

int64_t mmdit_parameter_count(const MMDiTConfig& c) {
  MMDiT m(c, torch::TensorOptions().device(torch::kMeta).dtype(torch::kFloat32));
  return count_parameters(*m);
}

// ---------------------------------------------------------------------------------------------------- loading

MMDiT load_mmdit(const std::string& path, const std::string& device, const std::string& dtype, bool freeze) {
  if (!fs::exists(path))
    fail("{}: does not exist; pass a model directory (config.json + *.safetensors) or a .safetensors file", path);
  fs::path dir = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
  auto tensors = load_tensors(path);
  bool diffusers = is_diffusers_flux(tensors);
  if (diffusers) tensors = flux_from_diffusers(tensors);

  std::optional<MMDiTConfig> cfg;
  if (fs::is_directory(path) && fs::exists(dir / "config.json")) {
    std::string p = (dir / "config.json").string();
    cfg = MMDiTConfig::from_json(read_json_file(p), p);
  } else if (fs::is_directory(path) && fs::exists(dir / "config.toml")) {
    auto c = Config::load((dir / "config.toml").string());
    cfg = MMDiTConfig::from_config(c, "generator");
  } else {
    cfg = MMDiTConfig::infer_from_weights(tensors, path);
  }
  MMDiT m(*cfg, torch::TensorOptions().device(torch::Device(device)).dtype(dtype_from_name(dtype)));
  load_frozen(*m, tensors, path, device, dtype, /*trainable=*/!freeze);
  return m;
}

void save_mmdit(const MMDiT& model, const std::string& dir, const std::string& format) {
  fs::create_directories(dir);
  auto state = module_state(*model);
  const auto& c = model->config;
  if (format == "diffusers") {
    auto j = c.to_diffusers_json();
    auto hf = flux_to_diffusers(state, j["pooled_projection_dim"].get<int64_t>());
    write_file_atomic((fs::path(dir) / "config.json").string(), j.dump(2) + "\n");
    save_tensors((fs::path(dir) / "diffusion_pytorch_model.safetensors").string(), hf, {{"format", "pt"}});
  } else if (format == "bfl") {
    write_file_atomic((fs::path(dir) / "config.json").string(), c.to_bfl_json().dump(2) + "\n");
    save_tensors((fs::path(dir) / "model.safetensors").string(), state, {{"format", "pt"}});
  } else {
    fail("unknown export format '{}'; use diffusers or bfl", format);
  }
}

void check_mmdit_checkpoint(const MMDiTConfig& c, const std::map<std::string, at::Tensor>& tensors,
                            const std::string& source) {
  MMDiT m(c, torch::TensorOptions().device(torch::kMeta));
  auto named = is_diffusers_flux(tensors) ? flux_from_diffusers(tensors) : tensors;
  for (auto& [k, v] : named) named[k] = v.to(torch::kMeta);
  load_weights(*m, named, source);
}

ForwardComponent mmdit_forward_component() {
  ForwardComponent c;
  c.name = "mmdit";
  c.help = "FLUX MM-DiT (diffusers FluxTransformer2DModel forward): hidden_states [B,N,in], encoder_hidden_states "
           "[B,L,C], timestep [B] in [0,1], img_ids [N,3], txt_ids [L,3] [+ pooled_projections, guidance, txt_mask "
           "[B,L]] -> sample [B,N,out]";
  c.inputs = {"hidden_states", "encoder_hidden_states", "timestep", "img_ids", "txt_ids"};
  c.optional_inputs = {"pooled_projections", "guidance", "txt_mask"};
  c.outputs = {"sample"};
  c.load = [](const ForwardOptions& opt) {
    auto m = load_mmdit(opt.model_dir, opt.device, opt.dtype);
    return LoadedComponent{m->parameters(), [m](const TensorMap& in) mutable {
      auto get = [&](const char* n) { return in.count(n) ? in.at(n) : at::Tensor(); };
      MMDiTInput x;
      x.img = get("hidden_states");
      x.txt = get("encoder_hidden_states");
      x.timesteps = get("timestep");
      x.img_ids = get("img_ids");
      x.txt_ids = get("txt_ids");
      x.y = get("pooled_projections");
      x.guidance = get("guidance");
      x.txt_mask = get("txt_mask");
      return TensorMap{{"sample", m->forward(x).to(torch::kFloat32)}};
    }};
  };
  return c;
}

}  // namespace iomm
