#include "conditioning/iomm_conditioner.h"

#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "models/internvl_preprocess.h"

namespace iomm {

ConditionerConfig ConditionerConfig::from_config(Config& cfg, const std::string& p, int64_t mllm_dim) {
  ConditionerConfig c;
  c.mode = cfg.get_choice(p + ".mode", c.mode, {"rqa", "metaquery", "raw"});
  c.cond_tokens = cfg.get_choice(p + ".cond_tokens", c.cond_tokens, {"queries", "all"});
  c.rqa.dim = mllm_dim;
  c.rqa.num_queries = cfg.get_int(p + ".num_queries", c.rqa.num_queries, 1, 4096);
  c.rqa.num_heads = cfg.get_int(p + ".num_heads", std::max<int64_t>(1, mllm_dim / 128), 1);
  c.rqa.mlp_ratio = cfg.get_double(p + ".mlp_ratio", c.rqa.mlp_ratio, 0.25, 16);
  c.rqa.cross_attention = c.mode == "rqa";
  c.mask_ratio = cfg.get_double(p + ".mask_ratio", c.mask_ratio, 0.0, 1.0);
  c.mask_granularity = parse_mask_granularity(
      cfg.get_choice(p + ".mask_granularity", "token", {"token", "element"}));
  c.templates = ConditionTemplates::from_config(cfg, p);
  if (mllm_dim % c.rqa.num_heads != 0)
    fail("config: {}.num_heads = {} does not divide the MLLM width {}", p, c.rqa.num_heads, mllm_dim);
  return c;
}

IommConditionerImpl::IommConditionerImpl(const ConditionerConfig& c, InternVL m, Tokenizer tok)
    : config(c), mllm(std::move(m)), tokenizer(std::move(tok)) {
  config.rqa.dim = mllm->config.llm.hidden_size;
  if (config.mode != "raw") rqa = register_module("rqa", ResidualQueryAdapter(config.rqa));
  int32_t pad = tokenizer.token_to_id("<|endoftext|>");
  pad_id = pad >= 0 ? pad : 0;
  if (tokenizer.token_to_id("<IMG_CONTEXT>") != mllm->config.image_token_id)
    fail("conditioner: the tokenizer's <IMG_CONTEXT> id {} differs from the MLLM's image_token_id {}; use the "
         "tokenizer that ships with the MLLM checkpoint",
         tokenizer.token_to_id("<IMG_CONTEXT>"), mllm->config.image_token_id);
}

int64_t IommConditionerImpl::width() const { return mllm->config.llm.hidden_size; }

at::Tensor image_condition_tokens(InternVLImpl& mllm, const at::Tensor& images) {
  torch::NoGradGuard no_grad;  // the MLLM is frozen
  auto param = mllm.parameters().front();
  auto pixels = internvl_condition_pixels(images.to(param.device()), mllm.config.tile_size);
  return mllm.image_tokens(pixels.to(param.scalar_type()));
}

at::Tensor IommConditionerImpl::image_tokens_of(const std::vector<ConditionInput>& inputs,
                                                const std::vector<int64_t>& rows) {
  auto param = mllm->parameters().front();
  // Rows without cached tokens run through the vision tower together, then every row takes its place.
  std::vector<at::Tensor> images, out(rows.size());
  std::vector<size_t> computed;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& in = inputs[size_t(rows[i])];
    if (in.image_tokens.defined()) {
      out[i] = in.image_tokens.to(param.device(), param.scalar_type());
    } else {
      images.push_back(in.image);
      computed.push_back(i);
    }
  }
  if (!images.empty()) {
    auto fresh = image_condition_tokens(*mllm, torch::stack(images));
    for (size_t j = 0; j < computed.size(); ++j) out[computed[j]] = fresh[int64_t(j)];
  }
  return torch::stack(out);
}

Condition IommConditionerImpl::forward(const std::vector<ConditionInput>& inputs, bool mim, at::Generator* gen,
                                       const at::Tensor& keep) {
  auto param = mllm->parameters().front();
  auto device = param.device();
  auto dtype = param.scalar_type();
  auto toks = tokenize_conditions(inputs, config.templates, tokenizer, image_tokens_per_image(), pad_id);
  truncated += toks.truncated;
  auto ids = toks.input_ids.to(device);
  auto key_mask = toks.attention_mask.to(device);

  // The prefix c: frozen embeddings with the (masked) image tokens spliced in. Nothing here trains.
  at::Tensor c;
  {
    torch::NoGradGuard no_grad;
    c = mllm->embed_tokens(ids);
    if (!toks.image_rows.empty()) {
      auto img = image_tokens_of(inputs, toks.image_rows);
      if (mim && (config.mask_ratio > 0 || keep.defined())) {
        // Only self-conditioned rows are masked; an edit's reference image is seen whole.
        std::vector<int64_t> self_conditioned;
        for (int64_t r : toks.image_rows) self_conditioned.push_back(inputs[size_t(r)].kind == ConditionKind::image);
        auto is_image = torch::tensor(self_conditioned).to(torch::kBool);
        at::Tensor masked;
        if (keep.defined()) {
          masked = apply_keep_mask(img, keep.to(device), config.mask_granularity);
        } else {
          if (gen == nullptr) fail("conditioner: masked image modeling needs a generator");
          masked = mask_image_tokens(img, config.mask_ratio, *gen, config.mask_granularity).tokens;
        }
        img = torch::where(is_image.to(device).view({-1, 1, 1}), masked, img);
      }
      c = mllm->splice_image_tokens(ids, c, img);
    }
  }

  if (config.mode == "raw") {
    torch::NoGradGuard no_grad;
    return {mllm->forward_embeds(c, key_mask).last_hidden_state, key_mask};
  }
  Qwen2Output prefix;
  {
    torch::NoGradGuard no_grad;
    prefix = mllm->forward_embeds(c, key_mask, {}, nullptr, /*use_cache=*/true);
  }
  // The adapter trains in its own dtype (fp32 masters) while the frozen MLLM may be held in bf16.
  auto q = rqa->forward(c.to(rqa->parameters().front().scalar_type()), key_mask);
  int64_t B = c.size(0), Nq = q.size(1);
  auto q_mask = torch::ones({B, Nq}, key_mask.options());
  auto h = mllm->forward_embeds(q.to(dtype), q_mask, {}, &prefix.cache, false).last_hidden_state;
  if (config.cond_tokens == "queries") return {h, q_mask};
  return {torch::cat({prefix.last_hidden_state, h}, 1), torch::cat({key_mask, q_mask}, 1)};
}

}  // namespace iomm
