#include "models/name_conversion.h"

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

}  // namespace iomm
