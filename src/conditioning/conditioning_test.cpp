#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "conditioning/condition_sequence.h"
#include "conditioning/iomm_conditioner.h"
#include "conditioning/mask_image_tokens.h"
#include "conditioning/residual_query_adapter.h"
#include "core/error.h"
#include "models/internvl_preprocess.h"
#include "models/weights.h"
#include "testing/tiny_fixtures.h"
#include "text/tokenizer.h"

using namespace iomm;

namespace {

// The shared fixture: a random tiny InternVL (16 px tiles -> 4 image tokens, width 32) with a byte-level tokenizer.
constexpr int32_t kPad = fixtures::kByteTokenizerPad;
Tokenizer byte_tokenizer() { return Tokenizer::load(fixtures::tiny_mllm_dir()); }
InternVL frozen_mllm() { return load_internvl(fixtures::tiny_mllm_dir(), "cpu", "float32", /*lm_head=*/false); }

ConditionerConfig small_config(const std::string& mode) {
  ConditionerConfig c;
  c.mode = mode;
  c.rqa.num_queries = 5;
  c.rqa.num_heads = 4;
  c.rqa.cross_attention = mode == "rqa";
  c.mask_ratio = 0.5;
  return c;
}

std::vector<ConditionInput> mixed_batch() {
  torch::manual_seed(3);
  return {{ConditionKind::text, "a red circle", {}},
          {ConditionKind::image, "", torch::rand({3, 16, 16}) * 2 - 1},
          {ConditionKind::uncond, "", {}},
          {ConditionKind::edit, "make it blue", torch::rand({3, 16, 16}) * 2 - 1}};
}

}  // namespace

TEST(MaskImageTokens, ZeroesAFractionOfWholeTokens) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  auto x = torch::randn({4, 1000, 8}) + 5;  // no exact zeros
  auto m = mask_image_tokens(x, 0.85, gen);
  auto zero_rows = (m.tokens == 0).all(-1);
  auto nonzero_rows = (m.tokens == x).all(-1);
  EXPECT_TRUE((zero_rows | nonzero_rows).all().item<bool>());  // each token is kept or zeroed whole
  EXPECT_TRUE(torch::equal(nonzero_rows, m.keep));
  double kept = m.keep.to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(kept, 0.15, 0.02);
  // Same generator state, same mask; ratio 0 is the identity; ratio 1 zeroes everything.
  auto g2 = at::make_generator<at::CPUGeneratorImpl>(7);
  EXPECT_TRUE(torch::equal(mask_image_tokens(x, 0.85, g2).tokens, m.tokens));
  EXPECT_TRUE(torch::equal(mask_image_tokens(x, 0.0, g2).tokens, x));
  EXPECT_EQ(mask_image_tokens(x, 1.0, g2).tokens.abs().sum().item<double>(), 0.0);
  auto e = mask_image_tokens(x, 0.5, g2, MaskGranularity::element);
  EXPECT_EQ(e.keep.sizes(), x.sizes());
  EXPECT_THROW(mask_image_tokens(x, 1.5, g2), Error);
}

TEST(ResidualQueryAdapter, ParameterCountIs29MAtInternVL3Width) {
  RQAConfig c;  // 256 queries, D = 1536, 12 heads, 4x MLP
  ResidualQueryAdapter rqa(c);
  EXPECT_EQ(count_parameters(*rqa), 28718592);  // research conditioning.md §4.3: 28.72M ≈ "29M"
  c.cross_attention = false;
  EXPECT_EQ(count_parameters(*ResidualQueryAdapter(c)), 256 * 1536);
}

// Both forms start from N(0, 1/D) queries. The MetaQuery-style form once returned before initialising them and
// trained from whatever memory torch::empty handed out (NaN gradients on every step of the adapter-metaquery run).
TEST(ResidualQueryAdapter, QueriesAreInitialisedInBothForms) {
  for (bool cross : {true, false}) {
    RQAConfig c;
    c.num_queries = 64;
    c.dim = 256;
    c.num_heads = 4;
    c.cross_attention = cross;
    // Dirty the allocator with NaN blocks of the queries' size, so that uninitialised memory would show.
    for (int i = 0; i < 8; ++i) torch::full({c.num_queries, c.dim}, NAN);
    ResidualQueryAdapter rqa(c);
    auto q = rqa->queries.detach();
    EXPECT_TRUE(torch::isfinite(q).all().item<bool>()) << "cross_attention=" << cross;
    EXPECT_NEAR(q.std().item<double>(), 1.0 / 16.0, 0.005) << "cross_attention=" << cross;
  }
}

TEST(ResidualQueryAdapter, EqualsTorchMultiheadAttentionBlock) {
  torch::manual_seed(1);
  RQAConfig c;
  c.num_queries = 6;
  c.dim = 16;
  c.num_heads = 4;
  ResidualQueryAdapter rqa(c);
  torch::nn::MultiheadAttention mha(torch::nn::MultiheadAttentionOptions(16, 4));
  {
    torch::NoGradGuard ng;
    mha->in_proj_weight.copy_(rqa->in_proj_weight);
    mha->in_proj_bias.copy_(rqa->in_proj_bias);
    mha->out_proj->weight.copy_(rqa->out_proj->weight);
    mha->out_proj->bias.copy_(rqa->out_proj->bias);
  }
  auto ctx = torch::randn({2, 7, 16});
  auto valid = torch::ones({2, 7}, torch::kBool);
  valid[1].slice(0, 4).fill_(false);
  auto ln = [](const at::Tensor& x) { return torch::layer_norm(x, {16}, {}, {}, 1e-6); };
  auto Q = rqa->queries.unsqueeze(0).expand({2, 6, 16});
  // nn.MultiheadAttention is sequence-first: [L, B, D].
  auto a = std::get<0>(mha->forward(ln(Q).transpose(0, 1), ln(ctx).transpose(0, 1), ln(ctx).transpose(0, 1),
                                    /*key_padding_mask=*/~valid))
               .transpose(0, 1);
  auto x = Q + a;
  auto ref = x + rqa->fc2->forward(torch::gelu(rqa->fc1->forward(ln(x)), "tanh"));
  auto out = rqa->forward(ctx, valid);
  EXPECT_LT((out - ref).abs().max().item<double>(), 1e-5);
  // Padded keys never matter.
  auto ctx2 = ctx.clone();
  ctx2[1].slice(0, 4).normal_();
  EXPECT_LT((rqa->forward(ctx2, valid) - out).abs().max().item<double>(), 1e-6);
}

TEST(ConditionSequence, TemplatesAndPadding) {
  auto tok = byte_tokenizer();
  ConditionTemplates t;
  auto batch = mixed_batch();
  auto ct = tokenize_conditions(batch, t, tok, 4, kPad);
  ASSERT_EQ(ct.input_ids.size(0), 4);
  EXPECT_EQ(ct.image_rows, (std::vector<int64_t>{1, 3}));
  auto row = [&](int b) {
    std::vector<int32_t> ids;
    for (int64_t j = 0; j < ct.input_ids.size(1); ++j)
      if (ct.attention_mask[b][j].item<bool>()) ids.push_back(int32_t(ct.input_ids[b][j].item<int64_t>()));
    return tok.decode(ids);
  };
  EXPECT_EQ(row(0), "<|im_start|>user\nGenerate an image: a red circle<|im_end|>\n<|im_start|>assistant\n<img>");
  EXPECT_EQ(row(2), "<|im_start|>user\nGenerate an image.<|im_end|>\n<|im_start|>assistant\n<img>");
  EXPECT_EQ(row(1),
            "<|im_start|>user\nGenerate an image that is identical to the reference image:<img>"
            "<IMG_CONTEXT><IMG_CONTEXT><IMG_CONTEXT><IMG_CONTEXT></img><|im_end|>\n<|im_start|>assistant\n<img>");
  EXPECT_NE(row(3).find("make it blue<img><IMG_CONTEXT>"), std::string::npos);
  // Right padding: every row's real tokens come first.
  auto m = ct.attention_mask.to(torch::kInt);
  EXPECT_TRUE(torch::equal(m, std::get<0>(m.sort(1, /*descending=*/true))));
  t.max_text_tokens = 3;
  EXPECT_EQ(tokenize_conditions(batch, t, tok, 4, kPad).truncated, 2);  // the caption and the instruction
}

TEST(IommConditioner, KvCachePrefixEqualsOneFullPassAndOnlyTheAdapterLearns) {
  auto mllm = frozen_mllm();
  torch::manual_seed(5);
  IommConditioner cond(small_config("rqa"), mllm, byte_tokenizer());
  auto batch = mixed_batch();
  auto out = cond->forward(batch, false, nullptr);
  ASSERT_EQ(out.h.sizes(), (std::vector<int64_t>{4, 5, 32}));
  EXPECT_TRUE(out.mask.all().item<bool>());

  // Reference: one pass of the LLM over [c ; q] with the padding mask.
  auto ct = tokenize_conditions(batch, cond->config.templates, cond->tokenizer, 4, kPad);
  at::Tensor c;
  {
    torch::NoGradGuard ng;
    std::vector<at::Tensor> imgs = {batch[1].image, batch[3].image};
    auto px = internvl_condition_pixels(torch::stack(imgs), 16);
    c = mllm->splice_image_tokens(ct.input_ids, mllm->embed_tokens(ct.input_ids), mllm->image_tokens(px));
  }
  auto q = cond->rqa->forward(c, ct.attention_mask);
  auto full = mllm->forward_embeds(torch::cat({c, q}, 1),
                                   torch::cat({ct.attention_mask, torch::ones({4, 5}, torch::kBool)}, 1))
                  .last_hidden_state.slice(1, -5);
  EXPECT_LT((full - out.h).abs().max().item<double>(), 1e-5);

  out.h.pow(2).sum().backward();
  for (auto& p : cond->rqa->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_GT(p.grad().abs().sum().item<double>(), 0.0);
  }
  for (auto& p : mllm->parameters()) EXPECT_FALSE(p.grad().defined());

  // cond_tokens = all: the valid prefix positions come first, then the queries.
  cond->config.cond_tokens = "all";
  auto all = cond->forward(batch, false, nullptr);
  EXPECT_EQ(all.h.size(1), ct.input_ids.size(1) + 5);
  EXPECT_TRUE(torch::equal(all.mask.slice(1, 0, ct.input_ids.size(1)), ct.attention_mask));
}

TEST(IommConditioner, MaskingTouchesOnlySelfConditionedImages) {
  auto mllm = frozen_mllm();
  IommConditioner cond(small_config("rqa"), mllm, byte_tokenizer());
  cond->config.mask_ratio = 1.0;  // every image token of image conditions zeroed
  auto batch = mixed_batch();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  torch::NoGradGuard ng;
  auto clean = cond->forward(batch, false, nullptr).h;
  auto masked = cond->forward(batch, true, &gen).h;
  EXPECT_GT((clean[1] - masked[1]).abs().max().item<double>(), 1e-4);  // the image condition changed
  for (int b : {0, 2, 3}) EXPECT_LT((clean[b] - masked[b]).abs().max().item<double>(), 1e-6) << b;
  // Fully masked image tokens equal a condition whose image is zero in embedding space: check via a second
  // image with different content giving the same masked output.
  batch[1].image = -batch[1].image;
  auto gen2 = at::make_generator<at::CPUGeneratorImpl>(0);
  EXPECT_LT((cond->forward(batch, true, &gen2).h[1] - masked[1]).abs().max().item<double>(), 1e-6);
  EXPECT_THROW(cond->forward(batch, true, nullptr), Error);
}

TEST(IommConditioner, RawAndMetaQueryModes) {
  auto mllm = frozen_mllm();
  IommConditioner raw(small_config("raw"), mllm, byte_tokenizer());
  EXPECT_TRUE(raw->parameters().empty());
  auto batch = mixed_batch();
  auto r = raw->forward(batch, false, nullptr);
  auto ct = tokenize_conditions(batch, raw->config.templates, raw->tokenizer, 4, kPad);
  EXPECT_EQ(r.h.size(1), ct.input_ids.size(1));
  EXPECT_TRUE(torch::equal(r.mask, ct.attention_mask));

  IommConditioner mq(small_config("metaquery"), mllm, byte_tokenizer());
  EXPECT_EQ(count_parameters(*mq), 5 * 32);  // queries only
  auto h = mq->forward(batch, false, nullptr).h;
  EXPECT_EQ(h.sizes(), (std::vector<int64_t>{4, 5, 32}));
  h.sum().backward();
  EXPECT_GT(mq->rqa->queries.grad().abs().sum().item<double>(), 0.0);
}
