// Qwen2 decoder (the LLM of InternVL3): GQA, rotate-half RoPE, fp32 RMSNorm, q/k/v bias, SwiGLU.
// Module names equal transformers' Qwen2Model / Qwen2ForCausalLM names, so loading is a dictionary walk.
// Frozen in IOMM, but differentiable with respect to its input embeddings; a prefix can run once without grad and
// leave a KV cache that later positions attend to (SPEC §1, "Gradient path").
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "models/components.h"

namespace iomm {

struct Qwen2Config {
  int64_t vocab_size = 151674;
  int64_t hidden_size = 1536;
  int64_t intermediate_size = 8960;
  int64_t num_hidden_layers = 28;
  int64_t num_attention_heads = 12;
  int64_t num_key_value_heads = 2;
  int64_t head_dim = 128;
  double rms_norm_eps = 1e-6;
  double rope_theta = 1000000.0;
  bool tie_word_embeddings = false;

  // From a transformers Qwen2 config object (also the `llm_config` / `text_config` of an InternVL config).
  // `source` names the file in error messages.
  static Qwen2Config from_json(const nlohmann::json& j, const std::string& source);
};

struct RMSNormImpl : torch::nn::Module {
  RMSNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// Per-layer keys (after RoPE) and values of the positions seen so far, plus which of them are real tokens.
struct KVCache {
  std::vector<at::Tensor> keys, values;  // [B, kv_heads, S, head_dim] per layer
  at::Tensor key_mask;                   // [B, S] bool: true = real token
  at::Tensor next_position;              // [B] int64: position id of the next real token
  int64_t length() const { return key_mask.defined() ? key_mask.size(1) : 0; }
};

struct Qwen2AttentionImpl : torch::nn::Module {
  explicit Qwen2AttentionImpl(const Qwen2Config& c);
  // x [B,S,D]; cos/sin [B,S,head_dim]; mask [B,1,S,S_total] bool (true = attend).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& mask,
                     const at::Tensor& past_k, const at::Tensor& past_v, at::Tensor* k_out, at::Tensor* v_out);
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  int64_t heads, kv_heads, head_dim;
};
TORCH_MODULE(Qwen2Attention);

struct Qwen2MLPImpl : torch::nn::Module {
  explicit Qwen2MLPImpl(const Qwen2Config& c);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Qwen2MLP);

struct Qwen2DecoderLayerImpl : torch::nn::Module {
  explicit Qwen2DecoderLayerImpl(const Qwen2Config& c);
  Qwen2Attention self_attn{nullptr};
  Qwen2MLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(Qwen2DecoderLayer);

struct Qwen2Output {
  at::Tensor last_hidden_state;  // after the final RMSNorm, [B,S,D]
  KVCache cache;                 // filled when use_cache
};

// transformers' Qwen2Model: embed_tokens, layers.N.*, norm.
struct Qwen2ModelImpl : torch::nn::Module {
  explicit Qwen2ModelImpl(const Qwen2Config& c);
  // inputs_embeds [B,S,D]; attention_mask [B,S] (1 = token, 0 = padding; undefined = all tokens);
  // position_ids [B,S] (undefined = derived from the mask: running count of real tokens, continuing `past`).
  Qwen2Output forward_embeds(const at::Tensor& inputs_embeds, const at::Tensor& attention_mask = {},
                             const at::Tensor& position_ids = {}, const KVCache* past = nullptr,
                             bool use_cache = false);
  at::Tensor embed(const at::Tensor& input_ids) { return embed_tokens->forward(input_ids); }

  Qwen2Config config;
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
};
TORCH_MODULE(Qwen2Model);

// transformers' Qwen2ForCausalLM: model.*, optional lm_head (untied in InternVL3).
struct Qwen2ForCausalLMImpl : torch::nn::Module {
  Qwen2ForCausalLMImpl(const Qwen2Config& c, bool with_lm_head);
  Qwen2Model model{nullptr};
  torch::nn::Linear lm_head{nullptr};  // null when loaded without a head
};
TORCH_MODULE(Qwen2ForCausalLM);

// Position ids from a padding mask: the running count of real tokens minus one (padding gets 1, as transformers'
// generate() does), starting at `start` per row when continuing a cache.
at::Tensor position_ids_from_mask(const at::Tensor& attention_mask, const at::Tensor& start = {});


// Loads a Qwen2ForCausalLM from a directory (config.json + safetensors, sharded too), any of the layouts in
// name_conversion.h. The LM head is loaded when present.
Qwen2ForCausalLM load_qwen2(const std::string& model_dir, const std::string& device = "cpu",
                            const std::string& dtype = "float32");

ForwardComponent qwen2_forward_component();

}  // namespace iomm
