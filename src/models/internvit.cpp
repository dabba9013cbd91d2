#include "models/internvit.h"

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/tensor_io.h"
#include "models/hf_config.h"
#include "models/name_conversion.h"
#include "models/qwen2.h"
#include "models/weights.h"

namespace iomm {

namespace F = torch::nn::functional;

// ---------------------------------------------------------------------------------------------------- config

namespace {

// `image_size` / `patch_size`: an int (original) or [h, w] (-hf); only square ones are supported.
int64_t square_size(const nlohmann::json& j, const char* key, int64_t def, const std::string& source) {
  if (!j.contains(key) || j[key].is_null()) return def;
  const auto& v = j[key];
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_array() && v.size() == 2 && v[0].is_number_integer() && v[1].is_number_integer()) {
    if (v[0].get<int64_t>() != v[1].get<int64_t>())
      fail("{}: vision_config.{} {} is not square; iomm supports square sizes only", source, key, v.dump());
    return v[0].get<int64_t>();
  }
  fail("{}: vision_config.{} must be an integer or [h, w], got {}", source, key, v.dump());
}

}  // namespace

InternViTConfig InternViTConfig::from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) fail("{}: vision_config is not an object", source);
  // The two config classes have different defaults for absent keys; the original one's are the 6B ViT's.
  bool original = json_get<std::string>(j, "model_type", "", source) == "intern_vit_6b" || j.contains("qkv_bias") ||
                  j.contains("qk_normalization");
  InternViTConfig c;
  c.hidden_size = json_get<int64_t>(j, "hidden_size", original ? 3200 : 1024, source);
  c.intermediate_size = json_get<int64_t>(j, "intermediate_size", original ? 12800 : 4096, source);
  c.num_hidden_layers = json_get<int64_t>(j, "num_hidden_layers", original ? 48 : 24, source);
  c.num_attention_heads = json_get<int64_t>(j, "num_attention_heads", original ? 25 : 16, source);
  c.num_channels = json_get<int64_t>(j, "num_channels", 3, source);
  c.image_size = square_size(j, "image_size", original ? 224 : 448, source);
  c.patch_size = square_size(j, "patch_size", 14, source);
  c.layer_norm_eps = json_get<double>(j, "layer_norm_eps", 1e-6, source);
  c.qkv_bias = original ? json_get<bool>(j, "qkv_bias", false, source) : json_get<bool>(j, "attention_bias", false, source);

  const char* qk_key = original ? "qk_normalization" : "use_qk_norm";
  if (json_get<bool>(j, qk_key, original, source))
    fail("{}: vision_config.{} is true (or absent, which defaults to true for the original InternViT config); "
         "iomm supports the InternViT-300M variant without qk normalisation only",
         source, qk_key);
  auto norm = json_get<std::string>(j, "norm_type", original ? "rms_norm" : "layer_norm", source);
  if (norm != "layer_norm")
    fail("{}: vision_config.norm_type '{}' is not supported; InternViT-300M uses 'layer_norm'", source, norm);
  auto act = json_get<std::string>(j, "hidden_act", "gelu", source);
  if (act != "gelu") fail("{}: vision_config.hidden_act '{}' is not supported; InternViT uses 'gelu'", source, act);
  if (!json_get<bool>(j, "use_absolute_position_embeddings", true, source))
    fail("{}: vision_config.use_absolute_position_embeddings=false is not supported", source);
  if (!json_get<bool>(j, "use_mean_pooling", true, source))
    fail("{}: vision_config.use_mean_pooling=false (a final LayerNorm on the ViT output) is not supported; "
         "InternVL3 has none",
         source);
  if (json_get<bool>(j, "use_mask_token", false, source))
    fail("{}: vision_config.use_mask_token=true is not supported (InternVL3 has no mask token)", source);

  for (auto [name, v] : {std::pair{"hidden_size", c.hidden_size}, {"intermediate_size", c.intermediate_size},
                         {"num_hidden_layers", c.num_hidden_layers}, {"num_attention_heads", c.num_attention_heads},
                         {"num_channels", c.num_channels}, {"image_size", c.image_size}, {"patch_size", c.patch_size}})
    if (v <= 0) fail("{}: vision_config.{} must be positive, got {}", source, name, v);
  if (c.hidden_size % c.num_attention_heads != 0)
    fail("{}: vision_config.hidden_size {} is not a multiple of num_attention_heads {}", source, c.hidden_size,
         c.num_attention_heads);
  if (c.image_size % c.patch_size != 0)
    fail("{}: vision_config.image_size {} is not a multiple of patch_size {}", source, c.image_size, c.patch_size);
  return c;
}

// ---------------------------------------------------------------------------------------------------- modules

InternViTEmbeddingsImpl::InternViTEmbeddingsImpl(const InternViTConfig& c) : config(c) {
  class_embedding = register_parameter("class_embedding", torch::randn({1, 1, c.hidden_size}));
  patch_embedding = register_module(
      "patch_embedding",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(c.num_channels, c.hidden_size, c.patch_size).stride(c.patch_size)));
  position_embedding =
      register_parameter("position_embedding", torch::randn({1, 1 + c.grid() * c.grid(), c.hidden_size}));
}

at::Tensor InternViTEmbeddingsImpl::position_embeddings_for(int64_t gh, int64_t gw) {
  int64_t G = config.grid(), C = config.hidden_size;
  if (gh == G && gw == G) return position_embedding;
  auto cls = position_embedding.slice(1, 0, 1);
  auto grid = position_embedding.slice(1, 1).to(torch::kFloat32).reshape({1, G, G, C}).permute({0, 3, 1, 2});
  grid = F::interpolate(grid, F::InterpolateFuncOptions()
                                  .size(std::vector<int64_t>{gh, gw})
                                  .mode(torch::kBicubic)
                                  .align_corners(false));
  grid = grid.permute({0, 2, 3, 1}).reshape({1, gh * gw, C}).to(position_embedding.scalar_type());
  return torch::cat({cls, grid}, 1);
}

at::Tensor InternViTEmbeddingsImpl::forward(const at::Tensor& pixel_values) {
  if (pixel_values.dim() != 4 || pixel_values.size(1) != config.num_channels)
    fail("InternViT: pixel_values must be [B, {}, H, W], got {}", config.num_channels, c10::str(pixel_values.sizes()));
  int64_t H = pixel_values.size(2), W = pixel_values.size(3), p = config.patch_size;
  if (H % p != 0 || W % p != 0 || H == 0 || W == 0)
    fail("InternViT: image size {}x{} is not a positive multiple of the patch size {}", H, W, p);
  auto x = patch_embedding->forward(pixel_values.to(patch_embedding->weight.scalar_type()));
  int64_t B = x.size(0);
  x = x.flatten(2).transpose(1, 2);  // [B, gh*gw, C], row-major patches
  x = torch::cat({class_embedding.expand({B, 1, config.hidden_size}).to(x.scalar_type()), x}, 1);
  return x + position_embeddings_for(H / p, W / p);
}

InternAttentionImpl::InternAttentionImpl(const InternViTConfig& c)
    : heads(c.num_attention_heads), head_dim(c.head_dim()) {
  using torch::nn::LinearOptions;
  qkv = register_module("qkv", torch::nn::Linear(LinearOptions(c.hidden_size, 3 * c.hidden_size).bias(c.qkv_bias)));
  proj = register_module("proj", torch::nn::Linear(LinearOptions(c.hidden_size, c.hidden_size)));
}

at::Tensor InternAttentionImpl::forward(const at::Tensor& x) {
  int64_t B = x.size(0), N = x.size(1);
  auto qkv_ = qkv->forward(x).view({B, N, 3, heads, head_dim}).permute({2, 0, 3, 1, 4});  // [3,B,h,N,d]
  auto o = at::scaled_dot_product_attention(qkv_[0], qkv_[1], qkv_[2]);                  // bidirectional
  return proj->forward(o.transpose(1, 2).reshape({B, N, heads * head_dim}));
}

InternMLPImpl::InternMLPImpl(const InternViTConfig& c) {
  fc1 = register_module("fc1", torch::nn::Linear(c.hidden_size, c.intermediate_size));
  fc2 = register_module("fc2", torch::nn::Linear(c.intermediate_size, c.hidden_size));
}

at::Tensor InternMLPImpl::forward(const at::Tensor& x) { return fc2->forward(F::gelu(fc1->forward(x))); }

InternViTLayerImpl::InternViTLayerImpl(const InternViTConfig& c) {
  using torch::nn::LayerNormOptions;
  attn = register_module("attn", InternAttention(c));
  mlp = register_module("mlp", InternMLP(c));
  norm1 = register_module("norm1", torch::nn::LayerNorm(LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
  norm2 = register_module("norm2", torch::nn::LayerNorm(LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
  ls1 = register_parameter("ls1", torch::full({c.hidden_size}, 0.1));
  ls2 = register_parameter("ls2", torch::full({c.hidden_size}, 0.1));
}

at::Tensor InternViTLayerImpl::forward(const at::Tensor& h) {
  auto x = h + ls1 * attn->forward(norm1->forward(h));
  return x + ls2 * mlp->forward(norm2->forward(x));
}

InternViTEncoderImpl::InternViTEncoderImpl(const InternViTConfig& c) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(InternViTLayer(c));
}

InternViTImpl::InternViTImpl(const InternViTConfig& c) : config(c) {
  embeddings = register_module("embeddings", InternViTEmbeddings(c));
  encoder = register_module("encoder", InternViTEncoder(c));
}

at::Tensor InternViTImpl::forward(const at::Tensor& pixel_values) {
  auto h = embeddings->forward(pixel_values);
  for (const auto& layer : *encoder->layers) h = layer->as<InternViTLayerImpl>()->forward(h);
  return h;
}

// ---------------------------------------------------------------------------------------------------- loading

InternViT load_internvit(const std::string& dir, const std::string& device, const std::string& dtype) {
  auto j = read_model_config(dir);
  auto cfg = InternViTConfig::from_json(j.contains("vision_config") ? j["vision_config"] : j, dir + "/config.json");
  auto tensors = internvit_names(load_tensors(dir));
  InternViT m(cfg);
  load_frozen(*m, tensors, dir, device, dtype);
  return m;
}

ForwardComponent internvit_forward_component() {
  ForwardComponent c;
  c.name = "internvit";
  c.help = "InternViT vision tower (transformers InternVLVisionModel): pixel_values [B,3,H,W] -> last_hidden_state "
           "[B,1+patches,C] (CLS first, no final norm; position embeddings interpolated for other sizes)";
  c.inputs = {"pixel_values"};
  c.outputs = {"last_hidden_state"};
  c.load = [](const ForwardOptions& opt) {
    auto m = load_internvit(opt.model_dir, opt.device, opt.dtype);
    return LoadedComponent{m->parameters(), [m, opt](const TensorMap& in) mutable {
      auto h = m->forward(in.at("pixel_values").to(torch::Device(opt.device)));
      return TensorMap{{"last_hidden_state", h.to(torch::kFloat32)}};
    }};
  };
  return c;
}

}  // namespace iomm
