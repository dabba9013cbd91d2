#include "models/internvl.h"

#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/tensor_io.h"
#include "models/hf_config.h"
#include "models/name_conversion.h"
#include "models/weights.h"

namespace iomm {

// ---------------------------------------------------------------------------------------------------- config

int64_t InternVLConfig::tokens_per_tile() const {
  int64_t g = tile_size / vision.patch_size;
  return (g / 2) * (g / 2);
}

InternVLConfig InternVLConfig::from_json(const nlohmann::json& j, const std::string& source) {
  InternVLConfig c;
  if (!j.is_object() || !j.contains("vision_config"))
    fail("{}: no vision_config; this is not an InternVL config.json (expected model_type internvl_chat or "
         "internvl)",
         source);
  c.vision = InternViTConfig::from_json(j["vision_config"], source);
  const char* llm_key = j.contains("llm_config") ? "llm_config" : j.contains("text_config") ? "text_config" : nullptr;
  if (!llm_key) fail("{}: no llm_config (original layout) or text_config (-hf layout)", source);
  const auto& llm = j[llm_key];
  auto llm_type = json_get<std::string>(llm, "model_type", "qwen2", source);
  if (llm_type != "qwen2")
    fail("{}: {}.model_type '{}' is not supported; iomm's InternVL has a Qwen2 LLM (InternVL3-1B/2B/8B/...)",
         source, llm_key, llm_type);
  c.llm = Qwen2Config::from_json(llm, source);

  c.downsample_ratio = json_get<double>(j, "downsample_ratio", 0.5, source);
  if (c.downsample_ratio != 0.5)
    fail("{}: downsample_ratio {} is not supported; InternVL3 uses 0.5", source, c.downsample_ratio);
  auto ps = json_get<std::string>(j, "ps_version", "v2", source);
  if (ps != "v2") fail("{}: ps_version '{}' is not supported; InternVL3 uses pixel shuffle 'v2'", source, ps);
  for (const char* key : {"select_layer", "vision_feature_layer"}) {
    auto layer = json_get<int64_t>(j, key, -1, source);
    if (layer != -1) fail("{}: {} {} is not supported; InternVL3 uses the last ViT layer (-1)", source, key, layer);
  }
  auto strategy = json_get<std::string>(j, "vision_feature_select_strategy", "default", source);
  if (strategy != "default")
    fail("{}: vision_feature_select_strategy '{}' is not supported; InternVL3 drops the CLS token ('default')",
         source, strategy);
  auto act = json_get<std::string>(j, "projector_hidden_act", "gelu", source);
  if (act != "gelu") fail("{}: projector_hidden_act '{}' is not supported; InternVL3 uses 'gelu'", source, act);

  c.image_token_id = json_get<int64_t>(j, "image_token_id", json_get<int64_t>(j, "img_context_token_id", 151667, source),
                                     source);
  if (c.image_token_id < 0 || c.image_token_id >= c.llm.vocab_size)
    fail("{}: image_token_id {} is outside the vocabulary (size {})", source, c.image_token_id, c.llm.vocab_size);
  c.tile_size = json_get<int64_t>(j, "force_image_size", c.vision.image_size, source);
  if (c.tile_size % (2 * c.vision.patch_size) != 0)
    fail("{}: the tile size {} (force_image_size or vision_config.image_size) is not a multiple of 2 × patch_size "
         "{}, so pixel shuffle cannot pair the patches",
         source, c.tile_size, c.vision.patch_size);
  return c;
}

// ---------------------------------------------------------------------------------------------------- modules

at::Tensor pixel_shuffle_v2(const at::Tensor& x) {
  if (x.dim() != 4 || x.size(1) % 2 != 0 || x.size(2) % 2 != 0)
    fail("pixel shuffle: expected [N, h, w, C] with h and w even, got {}", c10::str(x.sizes()));
  int64_t N = x.size(0), h = x.size(1), w = x.size(2), C = x.size(3);
  return x.reshape({N, h / 2, 2, w / 2, 2, C}).permute({0, 1, 3, 2, 4, 5}).reshape({N, (h / 2) * (w / 2), 4 * C});
}

InternVLImpl::InternVLImpl(const InternVLConfig& c, bool with_lm_head) : config(c) {
  using namespace torch::nn;
  vision_model = register_module("vision_model", InternViT(c.vision));
  mlp1 = register_module(
      "mlp1", Sequential(LayerNorm(LayerNormOptions({c.projector_in()}).eps(1e-5)),
                         Linear(c.projector_in(), c.llm.hidden_size), GELU(),
                         Linear(c.llm.hidden_size, c.llm.hidden_size)));
  language_model = register_module("language_model", Qwen2ForCausalLM(c.llm, with_lm_head));
}

at::Tensor InternVLImpl::image_tokens(const at::Tensor& pixel_values) {
  int64_t p = config.vision.patch_size;
  if (pixel_values.dim() != 4)
    fail("InternVL: pixel_values must be [tiles, 3, H, W], got {}", c10::str(pixel_values.sizes()));
  int64_t gh = pixel_values.size(2) / p, gw = pixel_values.size(3) / p;
  auto vit = vision_model->forward(pixel_values);  // validates the shape
  if (gh % 2 != 0 || gw % 2 != 0)
    fail("InternVL: the patch grid {}x{} of a {}x{} image is not even, so pixel shuffle cannot pair the patches; "
         "use tiles whose sides are multiples of {}",
         gh, gw, pixel_values.size(2), pixel_values.size(3), 2 * p);
  auto patches = vit.slice(1, 1).reshape({vit.size(0), gh, gw, vit.size(2)});  // drop CLS
  return mlp1->forward(pixel_shuffle_v2(patches));
}

at::Tensor InternVLImpl::embed_tokens(const at::Tensor& input_ids) {
  return language_model->model->embed(input_ids.to(torch::kLong));
}

at::Tensor InternVLImpl::splice_image_tokens(const at::Tensor& input_ids, const at::Tensor& embeds,
                                             const at::Tensor& image_tokens) const {
  auto is_image = (input_ids.to(embeds.device()) == config.image_token_id);
  int64_t slots = is_image.sum().item<int64_t>();
  int64_t D = embeds.size(-1);
  if (image_tokens.size(-1) != D)
    fail("InternVL: image tokens have width {} but the token embeddings {}", image_tokens.size(-1), D);
  int64_t given = image_tokens.numel() / D;
  if (slots != given)
    fail("InternVL: input_ids hold {} <IMG_CONTEXT> tokens (id {}) but the images give {} image tokens ({} per "
         "tile); put {} <IMG_CONTEXT> per tile into the prompt",
         slots, config.image_token_id, given, image_tokens.dim() == 3 ? image_tokens.size(1) : given,
         config.tokens_per_tile());
  if (slots == 0) return embeds;
  return embeds.masked_scatter(is_image.unsqueeze(-1), image_tokens.reshape({-1, D}).to(embeds.scalar_type()));
}

Qwen2Output InternVLImpl::forward_embeds(const at::Tensor& inputs_embeds, const at::Tensor& attention_mask,
                                         const at::Tensor& position_ids, const KVCache* past, bool use_cache) {
  return language_model->model->forward_embeds(inputs_embeds, attention_mask, position_ids, past, use_cache);
}

InternVLOutput InternVLImpl::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                     const at::Tensor& pixel_values, const at::Tensor& position_ids,
                                     bool use_cache) {
  InternVLOutput out;
  auto embeds = embed_tokens(input_ids);
  if (pixel_values.defined()) {
    out.vit_embeds = image_tokens(pixel_values);
    embeds = splice_image_tokens(input_ids, embeds, out.vit_embeds);
  } else {
    splice_image_tokens(input_ids, embeds, embeds.new_empty({0, embeds.size(-1)}));  // checks: no placeholders
  }
  auto r = forward_embeds(embeds, attention_mask, position_ids, nullptr, use_cache);
  out.last_hidden_state = r.last_hidden_state;
  out.cache = std::move(r.cache);
  return out;
}

// ---------------------------------------------------------------------------------------------------- loading

InternVL load_internvl(const std::string& dir, const std::string& device, const std::string& dtype, bool lm_head) {
  std::string cfg_path = dir + "/config.json";
  auto j = read_model_config(dir);
  auto cfg = InternVLConfig::from_json(j, cfg_path);

  auto tensors = internvl_names(load_tensors(dir));
  const std::string head = "language_model.lm_head.weight", embed = "language_model.model.embed_tokens.weight";
  if (!lm_head) tensors.erase(head);
  if (lm_head && !tensors.count(head) && cfg.llm.tie_word_embeddings && tensors.count(embed))
    tensors[head] = tensors[embed];
  InternVL m(cfg, tensors.count(head) > 0);
  load_frozen(*m, tensors, dir, device, dtype);
  return m;
}

nlohmann::json internvl_config_json(const InternVLConfig& c) {
  const auto& v = c.vision;
  const auto& l = c.llm;
  nlohmann::json vision = {
      {"model_type", "intern_vit_6b"}, {"architectures", {"InternVisionModel"}},
      {"hidden_size", v.hidden_size}, {"intermediate_size", v.intermediate_size},
      {"num_hidden_layers", v.num_hidden_layers}, {"num_attention_heads", v.num_attention_heads},
      {"num_channels", v.num_channels}, {"image_size", v.image_size}, {"patch_size", v.patch_size},
      {"qkv_bias", v.qkv_bias}, {"qk_normalization", false}, {"norm_type", "layer_norm"},
      {"layer_norm_eps", v.layer_norm_eps}, {"hidden_act", "gelu"}, {"use_flash_attn", false},
      {"drop_path_rate", 0.0}, {"initializer_factor", 0.1}};
  nlohmann::json llm = {
      {"model_type", "qwen2"}, {"architectures", {"Qwen2ForCausalLM"}}, {"vocab_size", l.vocab_size},
      {"hidden_size", l.hidden_size}, {"intermediate_size", l.intermediate_size},
      {"num_hidden_layers", l.num_hidden_layers}, {"num_attention_heads", l.num_attention_heads},
      {"num_key_value_heads", l.num_key_value_heads}, {"head_dim", l.head_dim}, {"rms_norm_eps", l.rms_norm_eps},
      {"rope_theta", l.rope_theta}, {"tie_word_embeddings", l.tie_word_embeddings}, {"hidden_act", "silu"},
      {"use_sliding_window", false}, {"torch_dtype", "float32"}};
  return {{"model_type", "internvl_chat"}, {"architectures", {"InternVLChatModel"}}, {"vision_config", vision},
          {"llm_config", llm}, {"downsample_ratio", c.downsample_ratio}, {"ps_version", "v2"}, {"select_layer", -1},
          {"force_image_size", c.tile_size}, {"img_context_token_id", c.image_token_id},
          {"template", "internvl2_5"}, {"dynamic_image_size", false}, {"use_thumbnail", false},
          {"tie_word_embeddings", l.tie_word_embeddings}, {"torch_dtype", "float32"}};
}

void save_internvl(InternVLImpl& model, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail("cannot create the model directory '{}': {}", dir, ec.message());
  TensorMap tensors;
  for (auto& [name, t] : module_state(model)) tensors[name] = t.to(torch::kFloat32);
  save_tensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  write_file_atomic(dir + "/config.json", internvl_config_json(model.config).dump(2) + "\n");
}

ForwardComponent internvl_forward_component() {
  ForwardComponent c;
  c.name = "internvl";
  c.help = "InternVL3 (transformers InternVLForConditionalGeneration): input_ids with <IMG_CONTEXT> placeholders + "
           "pixel_values [tiles,3,H,W] [+ attention_mask, position_ids] -> last_hidden_state (after the LLM's "
           "final norm), vit_embeds (image tokens after mlp1) [+ logits when the checkpoint has an LM head]";
  c.inputs = {"input_ids", "pixel_values"};
  c.optional_inputs = {"attention_mask", "position_ids"};
  c.outputs = {"last_hidden_state", "vit_embeds"};
  c.load = [](const ForwardOptions& opt) {
    auto m = load_internvl(opt.model_dir, opt.device, opt.dtype);
    return LoadedComponent{m->parameters(), [m, opt](const TensorMap& in) mutable {
      auto dev = torch::Device(opt.device);
      auto get = [&](const char* n) { return in.count(n) ? in.at(n).to(dev) : at::Tensor(); };
      auto r = m->forward(get("input_ids"), get("attention_mask"), get("pixel_values"), get("position_ids"));
      TensorMap out{{"last_hidden_state", r.last_hidden_state.to(torch::kFloat32)},
                    {"vit_embeds", r.vit_embeds.to(torch::kFloat32)}};
      if (m->language_model->lm_head)
        out["logits"] = m->language_model->lm_head->forward(r.last_hidden_state).to(torch::kFloat32);
      return out;
    }};
  };
  return c;
}

}  // namespace iomm
