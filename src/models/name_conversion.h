// All checkpoint-name conversion lives here. iomm's modules are named like the reference (transformers) modules,
// so conversion is only a matter of prefixes between the layouts users bring:
//   Qwen2ForCausalLM          model.*, lm_head.*            (iomm's own names)
//   Qwen2Model                *                             (no prefix, no head)
//   InternVL3 original        language_model.model.*, language_model.lm_head.*
//   InternVL3 -hf             model.language_model.*, lm_head.*
#pragma once
#include <map>
#include <string>

#include <ATen/core/Tensor.h>

namespace iomm {

using TensorMap = std::map<std::string, at::Tensor>;

// The Qwen2 LLM's tensors in Qwen2ForCausalLM names; tensors of other parts (vision tower, projector) are left out.
TensorMap qwen2_names(const TensorMap& checkpoint);

}  // namespace iomm
