#include "models/name_conversion.h"

#include <array>
#include <optional>

#include <ATen/ops/cat.h>

namespace iomm {

static bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

static bool any_prefix(const TensorMap& m, const std::string& p) {
  for (auto& [k, v] : m)
    if (starts_with(k, p)) return true;
  return false;
}

TensorMap qwen2_names(const TensorMap& ckpt) {
  TensorMap out;
  if (any_prefix(ckpt, "language_model.")) {  // InternVL original layout
    for (auto& [k, v] : ckpt)
      if (starts_with(k, "language_model.")) out[k.substr(15)] = v;
  } else if (any_prefix(ckpt, "model.language_model.")) {  // InternVL -hf layout
    for (auto& [k, v] : ckpt) {
      if (starts_with(k, "model.language_model.")) out["model." + k.substr(21)] = v;
      else if (starts_with(k, "lm_head.")) out[k] = v;
    }
  } else if (any_prefix(ckpt, "model.")) {  // Qwen2ForCausalLM
    out = ckpt;
  } else {  // bare Qwen2Model
    for (auto& [k, v] : ckpt) out["model." + k] = v;
  }
  return out;
}

// ---- InternViT / InternVL (after qwen2_names; FLUX/diffusers conversions follow at the end of the file)

static const char* const kVisionPrefixes[] = {"vision_model.", "model.vision_tower.", "vision_tower."};
static const char* const kProjectorPrefixes[] = {"model.multi_modal_projector.", "multi_modal_projector."};
static const char* const kLlmPrefixes[] = {"language_model.", "model.language_model.", "lm_head."};

// The part of `k` after the first of `prefixes` it starts with, or nullopt.
template <size_t N>
static std::optional<std::string> strip_any(const std::string& k, const char* const (&prefixes)[N]) {
  for (const char* p : prefixes)
    if (starts_with(k, p)) return k.substr(std::string(p).size());
  return std::nullopt;
}

// Tower-relative -hf names -> original names; original names pass through unchanged.
static TensorMap vit_to_original(const TensorMap& tower) {
  static const std::pair<const char*, const char*> kWhole[] = {
      {"embeddings.cls_token", "embeddings.class_embedding"},
      {"embeddings.position_embeddings", "embeddings.position_embedding"},
      {"embeddings.patch_embeddings.projection.weight", "embeddings.patch_embedding.weight"},
      {"embeddings.patch_embeddings.projection.bias", "embeddings.patch_embedding.bias"},
  };
  // Names inside encoder.layers.N.
  static const std::pair<const char*, const char*> kInLayer[] = {
      {"lambda_1", "ls1"},
      {"lambda_2", "ls2"},
      {"layernorm_before.", "norm1."},
      {"layernorm_after.", "norm2."},
      {"attention.projection_layer.", "attn.proj."},
  };
  TensorMap out;
  std::map<std::string, std::array<at::Tensor, 3>> split_qkv;  // "encoder.layers.N.attn.qkv.weight" -> q, k, v
  std::map<std::string, std::array<std::string, 3>> split_names;
  for (auto& [k, v] : tower) {
    std::string r = k;
    for (auto& [from, to] : kWhole)
      if (r == from) r = to;
    if (starts_with(r, "encoder.layer.")) r = "encoder.layers." + r.substr(14);
    if (starts_with(r, "encoder.layers.")) {
      size_t dot = r.find('.', 15);
      if (dot != std::string::npos) {
        std::string head = r.substr(0, dot + 1), rest = r.substr(dot + 1);
        for (auto& [from, to] : kInLayer)
          if (starts_with(rest, from)) rest = to + rest.substr(std::string(from).size());
        static const char* const kQkv[] = {"attention.q_proj.", "attention.k_proj.", "attention.v_proj."};
        bool split = false;
        for (int s = 0; s < 3; ++s)
          if (starts_with(rest, kQkv[s])) {
            std::string fused = head + "attn.qkv." + rest.substr(std::string(kQkv[s]).size());
            split_qkv[fused][s] = v;
            split_names[fused][s] = k;
            split = true;
          }
        if (split) continue;
        r = head + rest;
      }
    }
    out[r] = v;
  }
  for (auto& [fused, parts] : split_qkv) {
    if (parts[0].defined() && parts[1].defined() && parts[2].defined()) {
      out[fused] = at::cat({parts[0], parts[1], parts[2]}, 0);
    } else {  // incomplete: keep the parts under their own names, so that loading lists them
      for (int s = 0; s < 3; ++s)
        if (parts[s].defined()) out[split_names[fused][s]] = parts[s];
    }
  }
  return out;
}

TensorMap internvit_names(const TensorMap& ckpt) {
  TensorMap tower;
  bool prefixed = false;
  for (auto& [k, v] : ckpt)
    if (strip_any(k, kVisionPrefixes)) prefixed = true;
  for (auto& [k, v] : ckpt) {
    if (!prefixed) tower[k] = v;
    else if (auto r = strip_any(k, kVisionPrefixes)) tower[*r] = v;
  }
  return vit_to_original(tower);
}

TensorMap internvl_names(const TensorMap& ckpt) {
  static const std::pair<const char*, const char*> kProjector[] = {
      {"layer_norm.", "0."}, {"linear_1.", "1."}, {"linear_2.", "3."}};
  TensorMap tower, llm, out;
  for (auto& [k, v] : ckpt) {
    if (auto r = strip_any(k, kVisionPrefixes)) {
      tower[*r] = v;
    } else if (auto p = strip_any(k, kProjectorPrefixes)) {
      std::string name = k;  // unknown projector tensors keep their name
      for (auto& [from, to] : kProjector)
        if (starts_with(*p, from)) name = "mlp1." + (to + p->substr(std::string(from).size()));
      out[name] = v;
    } else if (strip_any(k, kLlmPrefixes)) {
      llm[k] = v;
    } else {
      out[k] = v;  // mlp1.* (original) and anything unknown
    }
  }
  for (auto& [k, v] : vit_to_original(tower)) out["vision_model." + k] = v;
  for (auto& [k, v] : qwen2_names(llm)) out["language_model." + k] = v;
  return out;
}

}  // namespace iomm
