#include "conditioning/condition_sequence.h"

#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "text/tokenizer.h"

namespace iomm {

const char* name(ConditionKind k) {
  switch (k) {
    case ConditionKind::text: return "text";
    case ConditionKind::uncond: return "uncond";
    case ConditionKind::image: return "image";
    case ConditionKind::edit: return "edit";
  }
  return "?";
}

ConditionTemplates ConditionTemplates::from_config(Config& cfg, const std::string& p) {
  ConditionTemplates t;
  t.aux_prompt = cfg.get_string(p + ".aux_prompt", t.aux_prompt);
  t.t2i_prefix = cfg.get_string(p + ".t2i_prefix", t.t2i_prefix);
  t.uncond_prompt = cfg.get_string(p + ".uncond_prompt", t.uncond_prompt);
  t.max_text_tokens = cfg.get_int(p + ".max_text_tokens", t.max_text_tokens, 1);
  return t;
}

namespace {

std::string image_block(int64_t n) {
  std::string s = "<img>";
  for (int64_t i = 0; i < n; ++i) s += "<IMG_CONTEXT>";
  return s + "</img>";
}

// Cuts `text` to at most `max_tokens` tokens (decoded back, so the cut falls on a token boundary).
std::string truncate_text(const std::string& text, const Tokenizer& tok, int64_t max_tokens, bool& cut) {
  auto ids = tok.encode(text);
  cut = int64_t(ids.size()) > max_tokens;
  if (!cut) return text;
  ids.resize(size_t(max_tokens));
  return tok.decode(ids);
}

}  // namespace

std::string condition_prompt(const ConditionInput& in, const ConditionTemplates& t, int64_t image_tokens) {
  switch (in.kind) {
    case ConditionKind::text: return t.t2i_prefix + in.text;
    case ConditionKind::uncond: return t.uncond_prompt;
    case ConditionKind::image: return t.aux_prompt + image_block(image_tokens);
    case ConditionKind::edit: return in.text + image_block(image_tokens);
  }
  return {};
}

std::vector<int32_t> tokenize_condition(const ConditionInput& input, const ConditionTemplates& t, const Tokenizer& tok,
                                        int64_t image_tokens, bool& cut) {
  ConditionInput in = input;
  cut = false;
  if (in.kind == ConditionKind::text || in.kind == ConditionKind::edit)
    in.text = truncate_text(in.text, tok, t.max_text_tokens, cut);
  // The trailing "<img>" opens the image the assistant is asked to produce (OpenUni's prompt).
  return tok.encode(apply_chat_template({{"user", condition_prompt(in, t, image_tokens)}}, true) + "<img>");
}

ConditionTokens tokenize_conditions(const std::vector<ConditionInput>& inputs, const ConditionTemplates& t,
                                    const Tokenizer& tok, int64_t image_tokens, int64_t pad_id) {
  if (inputs.empty()) fail("tokenize_conditions: empty batch");
  ConditionTokens out;
  std::vector<std::vector<int32_t>> rows;
  size_t L = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const ConditionInput& in = inputs[i];
    if (in.kind == ConditionKind::image || in.kind == ConditionKind::edit) {
      if (!in.image.defined() && !in.image_tokens.defined())
        fail("condition {} ({}) needs an image or its cached image tokens", i, name(in.kind));
      out.image_rows.push_back(int64_t(i));
    }
    if (in.input_ids.defined()) {  // cached by `iomm cache`: the same row tokenize_condition gives
      auto ids = in.input_ids.to(torch::kCPU, torch::kLong).contiguous();
      rows.emplace_back(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
    } else {
      bool cut = false;
      rows.push_back(tokenize_condition(in, t, tok, image_tokens, cut));
      out.truncated += cut;
    }
    L = std::max(L, rows.back().size());
  }
  int64_t B = int64_t(rows.size());
  out.input_ids = torch::full({B, int64_t(L)}, pad_id, torch::kLong);
  out.attention_mask = torch::zeros({B, int64_t(L)}, torch::kBool);
  auto ids = out.input_ids.accessor<int64_t, 2>();
  auto mask = out.attention_mask.accessor<bool, 2>();
  for (int64_t b = 0; b < B; ++b)
    for (size_t j = 0; j < rows[b].size(); ++j) {
      ids[b][j] = rows[b][j];
      mask[b][j] = true;
    }
  return out;
}

}  // namespace iomm
