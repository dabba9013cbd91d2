#include "apps/understanding.h"

#include <algorithm>
#include <filesystem>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/tensor_io.h"
#include "models/internvl_preprocess.h"
#include "models/weights.h"
#include "text/tokenizer.h"
#include "train/optimizer.h"

using namespace iomm;
namespace fs = std::filesystem;

namespace {

const std::string kTokenizer = std::string(IOMM_SOURCE_DIR) + "/configs/world/tokenizer.json";

const Tokenizer& tokenizer() {
  static const Tokenizer tok = Tokenizer::load(kTokenizer);
  return tok;
}

std::string temp_dir(const std::string& name) {
  auto p = fs::temp_directory_path() / fmt::format("iomm_understanding_test_{}_{}", ::getpid(), name);
  fs::remove_all(p);
  return p.string();
}

// Smaller than the default config so that the tests stay fast; the same code paths.
InternVLConfig small_config() {
  InternVLConfig c;
  c.vision.image_size = 32;
  c.vision.patch_size = 4;
  c.vision.hidden_size = 32;
  c.vision.num_hidden_layers = 1;
  c.vision.num_attention_heads = 2;
  c.vision.intermediate_size = 64;
  c.tile_size = 32;
  c.llm.hidden_size = 32;
  c.llm.num_hidden_layers = 2;
  c.llm.num_attention_heads = 4;
  c.llm.num_key_value_heads = 2;
  c.llm.head_dim = 8;
  c.llm.intermediate_size = 64;
  c.llm.rope_theta = 10000.0;
  c.llm.vocab_size = tokenizer().vocab_size();
  c.image_token_id = tokenizer().token_to_id("<IMG_CONTEXT>");
  return c;
}

std::string small_run_toml() {
  return fmt::format(R"(
[mllm]
tokenizer = "{}"
[mllm.vision]
hidden_size = 32
num_hidden_layers = 1
num_attention_heads = 2
intermediate_size = 64
[mllm.llm]
hidden_size = 32
head_dim = 8
intermediate_size = 64
[train]
steps = 6
batch_size = 4
log_every = 2
eval_samples = 6
eval_max_new_tokens = 6
[optim]
lr = 1e-3
warmup_steps = 2
schedule = "cosine"
)",
                     kTokenizer);
}

}  // namespace

TEST(Understanding, TokenizerHasTheInternVLTokens) {
  const auto& tok = tokenizer();
  for (const char* t : {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"})
    EXPECT_GE(tok.token_to_id(t), 256) << t;
  EXPECT_LE(tok.vocab_size(), 1024);
  // The world's words are single tokens, so captions are short.
  EXPECT_EQ(tok.encode(" triangle").size(), 1u);
  EXPECT_EQ(tok.encode("a purple cross left of a green circle").size(), 8u);
}

TEST(Understanding, LossMaskCoversExactlyTheAssistantTokens) {
  const auto& tok = tokenizer();
  const std::vector<std::string> caps = {"a red circle", "three squares to the left of a blue triangle", "two crosses"};
  auto b = make_caption_batch(tok, caps, 16);
  const auto prompt = tok.encode(caption_prompt(16));
  ASSERT_EQ(b.prompt_length, static_cast<int64_t>(prompt.size()));
  const int32_t im_end = tok.token_to_id("<|im_end|>"), img = tok.token_to_id("<IMG_CONTEXT>");
  EXPECT_EQ(std::count(prompt.begin(), prompt.end(), img), 16);
  for (size_t r = 0; r < caps.size(); ++r) {
    auto want = tok.encode(caps[r]);
    want.push_back(im_end);
    const int64_t P = b.prompt_length, n = static_cast<int64_t>(want.size());
    for (int64_t t = 0; t < b.input_ids.size(1); ++t) {
      const int64_t label = b.labels[r][t].item<int64_t>(), id = b.input_ids[r][t].item<int64_t>();
      const bool target = t >= P && t < P + n, token = t < P + n;
      EXPECT_EQ(label != kIgnoreLabel, target) << "row " << r << " position " << t;
      EXPECT_EQ(b.attention_mask[r][t].item<int64_t>(), token ? 1 : 0) << "row " << r << " position " << t;
      if (t < P) EXPECT_EQ(id, prompt[t]);
      if (target) {
        EXPECT_EQ(label, want[t - P]);
        EXPECT_EQ(id, want[t - P]);
      }
    }
    // The assistant turn, decoded, is the caption and the end of turn: nothing of the prompt leaks in.
    std::vector<int32_t> tgt;
    for (int64_t t = 0; t < b.labels.size(1); ++t)
      if (b.labels[r][t].item<int64_t>() != kIgnoreLabel) tgt.push_back(static_cast<int32_t>(b.labels[r][t].item<int64_t>()));
    EXPECT_EQ(tok.decode(tgt), caps[r] + "<|im_end|>");
  }
  // The prompt is InternVL3's chat form with the image in the user turn.
  EXPECT_EQ(tok.decode(prompt).substr(0, 28), "<|im_start|>user\n<img><IMG_C");
  EXPECT_NE(tok.decode(prompt).find("</img>\nDescribe the image.<|im_end|>\n<|im_start|>assistant\n"),
            std::string::npos);
}

TEST(Understanding, WorldCaptionsAreDeterministicAndSigned) {
  auto a = world_captions(7, 100, 3, 32), b = world_captions(7, 100, 3, 32), c = world_captions(7, 103, 3, 32);
  EXPECT_TRUE(torch::equal(a.images, b.images));
  EXPECT_EQ(a.captions, b.captions);
  EXPECT_NE(a.captions, c.captions);
  EXPECT_EQ(a.images.sizes(), (std::vector<int64_t>{3, 3, 32, 32}));
  EXPECT_GE(a.images.min().item<float>(), -1.0f);
  EXPECT_LE(a.images.max().item<float>(), 1.0f);
  EXPECT_LT(a.images.min().item<float>(), -0.2f);  // not [0, 1]
}

TEST(Understanding, LossFallsOnAFixedBatch) {
  // One thread: on a busy 2-core machine two OpenMP threads made this test 4x slower.
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  torch::manual_seed(0);
  InternVL model(small_config(), true);
  init_understanding_weights(*model, 0.02);
  auto data = world_captions(11, 0, 8, 32);
  auto batch = make_caption_batch(tokenizer(), data.captions, model->config.tokens_per_tile());
  auto pixels = internvl_condition_pixels(data.images, 32);
  OptimConfig oc;
  oc.lr = 3e-3;
  Optimizer opt(trainable_parameters(*model), oc);
  double first = 0, last = 0;
  for (int step = 0; step < 40; ++step) {
    auto loss = caption_loss(*model, batch, pixels);
    loss.backward();
    opt.step(step);
    (step == 0 ? first : last) = loss.item<double>();
  }
  // Untrained: about ln(vocab) ≈ 6. Memorising 8 captions must at least halve that within 40 steps.
  EXPECT_GT(first, 4.0);
  EXPECT_LT(last, 0.5 * first) << "first " << first << " last " << last;
  at::set_num_threads(threads);
}

TEST(Understanding, SaveReloadGivesTheSameModel) {
  torch::manual_seed(3);
  InternVL model(small_config(), true);
  model->eval();
  const auto dir = temp_dir("save");
  save_internvl(*model, dir);
  auto j = nlohmann::json::parse(read_file(dir + "/config.json"));
  EXPECT_EQ(j["model_type"], "internvl_chat");
  EXPECT_TRUE(j.contains("vision_config") && j.contains("llm_config"));
  auto back = InternVLConfig::from_json(j, "config.json");
  EXPECT_EQ(back.tokens_per_tile(), 16);
  EXPECT_EQ(back.image_token_id, model->config.image_token_id);
  EXPECT_EQ(back.llm.vocab_size, model->config.llm.vocab_size);
  EXPECT_EQ(back.vision.hidden_size, 32);
  EXPECT_EQ(back.llm.head_dim, 8);
  EXPECT_FALSE(back.llm.tie_word_embeddings);
  auto names = load_tensors(dir);
  EXPECT_TRUE(names.count("vision_model.embeddings.class_embedding"));
  EXPECT_TRUE(names.count("mlp1.0.weight") && names.count("mlp1.3.weight"));
  EXPECT_TRUE(names.count("language_model.lm_head.weight"));
  EXPECT_TRUE(names.count("language_model.model.embed_tokens.weight"));

  auto loaded = load_internvl(dir);
  auto data = world_captions(5, 0, 3, 32);
  auto batch = make_caption_batch(tokenizer(), data.captions, 16);
  auto pixels = internvl_condition_pixels(data.images, 32);
  torch::NoGradGuard no_grad;
  auto a = caption_loss(*model, batch, pixels), b = caption_loss(*loaded, batch, pixels);
  EXPECT_EQ(a.item<double>(), b.item<double>());
  auto ha = model->forward(batch.input_ids, batch.attention_mask, pixels).last_hidden_state;
  auto hb = loaded->forward(batch.input_ids, batch.attention_mask, pixels).last_hidden_state;
  EXPECT_TRUE(torch::equal(ha, hb));
  fs::remove_all(dir);
}

TEST(Understanding, CachedGreedyDecodingEqualsFullRecomputation) {
  torch::manual_seed(1);
  InternVL model(small_config(), true);
  model->eval();
  const auto& tok = tokenizer();
  auto data = world_captions(2, 0, 3, 32);
  auto pixels = internvl_condition_pixels(data.images, 32);
  const int64_t max_new = 6;
  auto got = generate_captions(*model, tok, pixels, max_new);
  ASSERT_EQ(got.size(), 3u);
  // Reference: rerun the whole sequence for every new token, no cache.
  torch::NoGradGuard no_grad;
  const auto prompt = tok.encode(caption_prompt(16));
  const int32_t im_end = tok.token_to_id("<|im_end|>"), eot = tok.token_to_id("<|endoftext|>");
  for (int64_t b = 0; b < 3; ++b) {
    std::vector<int64_t> ids(prompt.begin(), prompt.end());
    std::vector<int32_t> out;
    for (int64_t k = 0; k < max_new; ++k) {
      auto h = model->forward(torch::tensor(ids).unsqueeze(0), {}, pixels.slice(0, b, b + 1)).last_hidden_state;
      const int64_t next = model->language_model->lm_head->forward(h.select(1, -1)).argmax(-1).item<int64_t>();
      if (next == im_end || next == eot) break;
      out.push_back(static_cast<int32_t>(next));
      ids.push_back(next);
    }
    EXPECT_EQ(got[b], tok.decode(out, true)) << "sample " << b;
  }
}

TEST(Understanding, ResumeAfterStopGivesTheSameWeights) {
  const auto straight = temp_dir("straight"), stopped = temp_dir("stopped");
  {
    Config cfg = Config::parse(small_run_toml());
    auto r = train_understanding(cfg, straight, false);
    ASSERT_TRUE(r.finished);
    for (const char* k : {"token_accuracy", "exact_match", "content_word_accuracy", "content_all_match", "by_tag",
                          "examples"})
      EXPECT_TRUE(r.eval.contains(k)) << k;
    EXPECT_TRUE(fs::exists(straight + "/caption_eval.json"));
    EXPECT_TRUE(fs::exists(straight + "/model/tokenizer.json"));
  }
  {
    Config cfg = Config::parse(small_run_toml());
    cfg.set("train.stop_at=3");
    auto r = train_understanding(cfg, stopped, false);
    EXPECT_FALSE(r.finished);
    EXPECT_FALSE(fs::exists(stopped + "/model"));
    // The shared loop's crash-safe checkpoint format, not a stage-specific state file.
    EXPECT_TRUE(fs::exists(stopped + "/checkpoints/step-00000003/COMPLETE"));
  }
  {
    Config cfg = Config::parse(small_run_toml());
    auto r = train_understanding(cfg, stopped, true);
    ASSERT_TRUE(r.finished);
  }
  auto a = load_tensors(straight + "/model"), b = load_tensors(stopped + "/model");
  ASSERT_EQ(a.size(), b.size());
  for (auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
  // The comparison means something only if training moved the weights away from the initialisation.
  auto init = [] {
    torch::manual_seed(0);
    InternVL m(small_config(), true);
    init_understanding_weights(*m, 0.02);
    return module_state(*m);
  }();
  for (const char* n : {"language_model.lm_head.weight", "vision_model.embeddings.patch_embedding.weight"})
    EXPECT_GT((init.at(n) - a.at(n)).abs().max().item<double>(), 1e-4) << n;
  fs::remove_all(straight);
  fs::remove_all(stopped);
}

TEST(Understanding, InitialisationFollowsTransformers) {
  torch::manual_seed(0);
  InternVL m(small_config(), true);
  init_understanding_weights(*m, 0.02);
  auto st = module_state(*m);
  for (const char* n : {"language_model.lm_head.weight", "language_model.model.embed_tokens.weight",
                        "vision_model.embeddings.position_embedding", "mlp1.1.weight",
                        "vision_model.encoder.layers.0.attn.qkv.weight"})
    EXPECT_NEAR(st.at(n).std().item<double>(), 0.02, 0.004) << n;
  EXPECT_EQ(st.at("mlp1.1.bias").abs().max().item<double>(), 0.0);
  EXPECT_EQ(st.at("vision_model.encoder.layers.0.attn.qkv.bias").abs().max().item<double>(), 0.0);
  EXPECT_TRUE(torch::equal(st.at("language_model.model.norm.weight"), torch::ones({32})));
  EXPECT_TRUE(torch::equal(st.at("mlp1.0.weight"), torch::ones({128})));
  EXPECT_TRUE(torch::allclose(st.at("vision_model.encoder.layers.0.ls1"), torch::full({32}, 0.1)));
}

TEST(Understanding, ConfigTyposFail) {
  Config cfg = Config::parse(small_run_toml());
  cfg.set("train.stpes=3");
  const auto dir = temp_dir("typo");
  EXPECT_THROW(train_understanding(cfg, dir, false), Error);
  fs::remove_all(dir);
}
