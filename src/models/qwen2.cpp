#include "models/qwen2.h"

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

namespace F = torch::nn::functional;

// ---------------------------------------------------------------------------------------------------- config

Qwen2Config Qwen2Config::from_json(const nlohmann::json& j, const std::string& source) {
  Qwen2Config c;
  c.vocab_size = json_get<int64_t>(j, "vocab_size", c.vocab_size, source);
  c.hidden_size = json_get<int64_t>(j, "hidden_size", c.hidden_size, source);
  c.intermediate_size = json_get<int64_t>(j, "intermediate_size", c.intermediate_size, source);
  c.num_hidden_layers = json_get<int64_t>(j, "num_hidden_layers", c.num_hidden_layers, source);
  c.num_attention_heads = json_get<int64_t>(j, "num_attention_heads", c.num_attention_heads, source);
  c.num_key_value_heads = json_get<int64_t>(j, "num_key_value_heads", c.num_attention_heads, source);
  c.head_dim = json_get<int64_t>(j, "head_dim", c.hidden_size / c.num_attention_heads, source);
  c.rms_norm_eps = json_get<double>(j, "rms_norm_eps", c.rms_norm_eps, source);
  // transformers ≥5 moves rope_theta into rope_parameters; older files have it at the top level.
  c.rope_theta = json_get<double>(j, "rope_theta", c.rope_theta, source);
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object())
    c.rope_theta = json_get<double>(j["rope_parameters"], "rope_theta", c.rope_theta, source);
  c.tie_word_embeddings = json_get<bool>(j, "tie_word_embeddings", false, source);
  std::string act = json_get<std::string>(j, "hidden_act", "silu", source);
  if (act != "silu") fail("{}: hidden_act '{}' is not supported; Qwen2 uses 'silu'", source, act);
  if (json_get<bool>(j, "use_sliding_window", false, source))
    fail("{}: use_sliding_window=true is not supported (InternVL3 and Qwen2.5 have it off)", source);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", source, c.num_attention_heads,
         c.num_key_value_heads);
  return c;
}

// ---------------------------------------------------------------------------------------------------- modules

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  // Statistics in fp32 whatever the compute dtype, then back, then the weight — transformers' order.
  auto xf = x.to(torch::kFloat32);
  auto y = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * y.to(x.scalar_type());
}

static at::Tensor rotate_half(const at::Tensor& x) {
  auto halves = x.chunk(2, -1);
  return torch::cat({-halves[1], halves[0]}, -1);
}

Qwen2AttentionImpl::Qwen2AttentionImpl(const Qwen2Config& c)
    : heads(c.num_attention_heads), kv_heads(c.num_key_value_heads), head_dim(c.head_dim) {
  using torch::nn::LinearOptions;
  q_proj = register_module("q_proj", torch::nn::Linear(LinearOptions(c.hidden_size, heads * head_dim).bias(true)));
  k_proj = register_module("k_proj", torch::nn::Linear(LinearOptions(c.hidden_size, kv_heads * head_dim).bias(true)));
  v_proj = register_module("v_proj", torch::nn::Linear(LinearOptions(c.hidden_size, kv_heads * head_dim).bias(true)));
  o_proj = register_module("o_proj", torch::nn::Linear(LinearOptions(heads * head_dim, c.hidden_size).bias(false)));
}

at::Tensor Qwen2AttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                       const at::Tensor& mask, const at::Tensor& past_k, const at::Tensor& past_v,
                                       at::Tensor* k_out, at::Tensor* v_out) {
  int64_t B = x.size(0), S = x.size(1);
  auto q = q_proj->forward(x).view({B, S, heads, head_dim}).transpose(1, 2);
  auto k = k_proj->forward(x).view({B, S, kv_heads, head_dim}).transpose(1, 2);
  auto v = v_proj->forward(x).view({B, S, kv_heads, head_dim}).transpose(1, 2);
  auto c = cos.unsqueeze(1), s = sin.unsqueeze(1);
  q = q * c + rotate_half(q) * s;
  k = k * c + rotate_half(k) * s;
  if (past_k.defined()) {
    k = torch::cat({past_k, k}, 2);
    v = torch::cat({past_v, v}, 2);
  }
  if (k_out) *k_out = k;
  if (v_out) *v_out = v;
  auto o = at::scaled_dot_product_attention(q, k, v, mask, 0.0, /*is_causal=*/false, std::nullopt,
                                            /*enable_gqa=*/kv_heads != heads);
  return o_proj->forward(o.transpose(1, 2).reshape({B, S, heads * head_dim}));
}

Qwen2MLPImpl::Qwen2MLPImpl(const Qwen2Config& c) {
  using torch::nn::LinearOptions;
  gate_proj = register_module("gate_proj", torch::nn::Linear(LinearOptions(c.hidden_size, c.intermediate_size).bias(false)));
  up_proj = register_module("up_proj", torch::nn::Linear(LinearOptions(c.hidden_size, c.intermediate_size).bias(false)));
  down_proj = register_module("down_proj", torch::nn::Linear(LinearOptions(c.intermediate_size, c.hidden_size).bias(false)));
}

at::Tensor Qwen2MLPImpl::forward(const at::Tensor& x) {
  return down_proj->forward(F::silu(gate_proj->forward(x)) * up_proj->forward(x));
}

Qwen2DecoderLayerImpl::Qwen2DecoderLayerImpl(const Qwen2Config& c) {
  self_attn = register_module("self_attn", Qwen2Attention(c));
  mlp = register_module("mlp", Qwen2MLP(c));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

Qwen2ModelImpl::Qwen2ModelImpl(const Qwen2Config& c) : config(c) {
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(Qwen2DecoderLayer(c));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

at::Tensor position_ids_from_mask(const at::Tensor& attention_mask, const at::Tensor& start) {
  auto m = attention_mask.to(torch::kLong);
  auto pos = m.cumsum(1) - 1;
  if (start.defined()) pos = pos + start.to(torch::kLong).unsqueeze(1);
  return pos.masked_fill(m == 0, 1);
}

Qwen2Output Qwen2ModelImpl::forward_embeds(const at::Tensor& inputs_embeds, const at::Tensor& attention_mask,
                                           const at::Tensor& position_ids, const KVCache* past, bool use_cache) {
  const auto& c = config;
  int64_t B = inputs_embeds.size(0), S = inputs_embeds.size(1);
  auto dev = inputs_embeds.device();
  int64_t P = past ? past->length() : 0;
  if (past && past->keys.size() != static_cast<size_t>(c.num_hidden_layers))
    fail("KV cache has {} layers but the model has {}", past->keys.size(), c.num_hidden_layers);

  auto mask = attention_mask.defined() ? attention_mask.to(dev).to(torch::kBool)
                                       : torch::ones({B, S}, torch::dtype(torch::kBool).device(dev));
  auto pos = position_ids.defined() ? position_ids.to(dev)
                                    : position_ids_from_mask(mask, past ? past->next_position : at::Tensor());

  // Keys are [past ; new]; a query at new position i sees real keys up to past length + i.
  auto key_mask = past ? torch::cat({past->key_mask.to(dev), mask}, 1) : mask;
  auto qi = torch::arange(S, torch::dtype(torch::kLong).device(dev)).unsqueeze(1) + P;
  auto kj = torch::arange(P + S, torch::dtype(torch::kLong).device(dev)).unsqueeze(0);
  auto allowed = (kj <= qi).unsqueeze(0) & key_mask.unsqueeze(1);  // [B,S,P+S]
  // A padding query may see no key at all; let it see every key so that softmax and its gradient stay finite.
  // Its output is never used.
  allowed = allowed | ~allowed.any(-1, /*keepdim=*/true);
  allowed = allowed.unsqueeze(1);

  // RoPE tables in fp32, cast to the compute dtype (transformers' order).
  auto inv_freq = 1.0 / torch::pow(c.rope_theta, torch::arange(0, c.head_dim, 2, torch::dtype(torch::kFloat32).device(dev)) /
                                                     static_cast<double>(c.head_dim));
  auto freqs = pos.to(torch::kFloat32).unsqueeze(-1) * inv_freq;
  auto emb = torch::cat({freqs, freqs}, -1);
  auto cos = emb.cos().to(inputs_embeds.scalar_type()), sin = emb.sin().to(inputs_embeds.scalar_type());

  Qwen2Output out;
  auto h = inputs_embeds;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    auto& layer = layers[i]->as<Qwen2DecoderLayerImpl>()[0];
    at::Tensor k, v;
    auto a = layer.self_attn->forward(layer.input_layernorm->forward(h), cos, sin, allowed,
                                      past ? past->keys[i] : at::Tensor(), past ? past->values[i] : at::Tensor(),
                                      use_cache ? &k : nullptr, use_cache ? &v : nullptr);
    h = h + a;
    h = h + layer.mlp->forward(layer.post_attention_layernorm->forward(h));
    if (use_cache) {
      out.cache.keys.push_back(k);
      out.cache.values.push_back(v);
    }
  }
  out.last_hidden_state = norm->forward(h);
  if (use_cache) {
    out.cache.key_mask = key_mask;
    auto seen = mask.to(torch::kLong).sum(1);
    out.cache.next_position = past ? past->next_position.to(dev) + seen : seen;
  }
  return out;
}

Qwen2ForCausalLMImpl::Qwen2ForCausalLMImpl(const Qwen2Config& c, bool with_lm_head) {
  model = register_module("model", Qwen2Model(c));
  if (with_lm_head)
    lm_head = register_module("lm_head", torch::nn::Linear(torch::nn::LinearOptions(c.hidden_size, c.vocab_size).bias(false)));
}

// ---------------------------------------------------------------------------------------------------- loading

Qwen2ForCausalLM load_qwen2(const std::string& dir, const std::string& device, const std::string& dtype) {
  std::string cfg_path = dir + "/config.json";
  auto j = read_model_config(dir);
  // InternVL configs nest the LLM config: `llm_config` (original) or `text_config` (-hf).
  const nlohmann::json* llm = &j;
  if (j.contains("llm_config")) llm = &j["llm_config"];
  else if (j.contains("text_config")) llm = &j["text_config"];
  auto cfg = Qwen2Config::from_json(*llm, cfg_path);

  auto tensors = qwen2_names(load_tensors(dir));
  bool has_head = tensors.count("lm_head.weight") > 0;
  if (!has_head && cfg.tie_word_embeddings && tensors.count("model.embed_tokens.weight")) {
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"];
    has_head = true;
  }
  Qwen2ForCausalLM m(cfg, has_head);
  load_frozen(*m, tensors, dir, device, dtype);
  return m;
}

ForwardComponent qwen2_forward_component() {
  ForwardComponent c;
  c.name = "qwen2";
  c.help = "Qwen2 decoder (transformers Qwen2Model): input_ids or inputs_embeds [+ attention_mask, position_ids] "
           "-> last_hidden_state (after the final norm) [+ logits when the checkpoint has an LM head]";
  c.optional_inputs = {"input_ids", "inputs_embeds", "attention_mask", "position_ids"};
  c.outputs = {"last_hidden_state"};
  c.load = [](const ForwardOptions& opt) {
    auto m = load_qwen2(opt.model_dir, opt.device, opt.dtype);
    return LoadedComponent{m->parameters(), [m, opt](const TensorMap& in) mutable {
      auto dev = torch::Device(opt.device);
      auto dt = dtype_from_name(opt.dtype);
      auto get = [&](const char* n) { return in.count(n) ? in.at(n).to(dev) : at::Tensor(); };
      at::Tensor embeds = get("inputs_embeds");
      if (embeds.defined() == in.count("input_ids") > 0)
        fail("qwen2: give exactly one of input_ids and inputs_embeds");
      embeds = embeds.defined() ? embeds.to(dt) : m->model->embed(get("input_ids").to(torch::kLong));
      auto r = m->model->forward_embeds(embeds, get("attention_mask"), get("position_ids"));
      TensorMap out{{"last_hidden_state", r.last_hidden_state.to(torch::kFloat32)}};
      if (m->lm_head) out["logits"] = m->lm_head->forward(r.last_hidden_state).to(torch::kFloat32);
      return out;
    }};
  };
  return c;
}

}  // namespace iomm
