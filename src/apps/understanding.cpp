#include "apps/understanding.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/metrics.h"
#include "core/run_dir.h"
#include "data/image_tensor.h"
#include "models/internvl_preprocess.h"
#include "models/weights.h"
#include "text/tokenizer.h"
#include "train/trainer.h"
#include "apps/caption_metrics.h"
#include "world/captions.h"
#include "world/corpus.h"

namespace iomm {

namespace fs = std::filesystem;

namespace {

int32_t special_id(const Tokenizer& tok, const char* token, const std::string& source) {
  int32_t id = tok.token_to_id(token);
  if (id < 0)
    fail("{}: the tokenizer has no {} token; the understanding model needs InternVL3's added tokens "
         "(<|endoftext|>, <|im_start|>, <|im_end|>, <img>, </img>, <IMG_CONTEXT>); regenerate it with "
         "scripts/make_world_tokenizer.py",
         source, token);
  return id;
}

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

// ---------------------------------------------------------------------------------------------------- config

LoopConfig UnderstandingConfig::default_loop() {
  LoopConfig l;
  l.steps = 2000;
  l.log_every = 100;
  l.checkpoint_every = 1000;
  l.threads = 1;
  return l;
}

UnderstandingConfig UnderstandingConfig::from_config(Config& cfg) {
  UnderstandingConfig c;
  c.tokenizer = cfg.get_string("mllm.tokenizer", "configs/world/tokenizer.json");
  auto& v = c.model.vision;
  v.image_size = cfg.get_int("mllm.vision.image_size", 32, 8);
  v.patch_size = cfg.get_int("mllm.vision.patch_size", 4, 1);
  v.hidden_size = cfg.get_int("mllm.vision.hidden_size", 64, 1);
  v.num_hidden_layers = cfg.get_int("mllm.vision.num_hidden_layers", 2, 1);
  v.num_attention_heads = cfg.get_int("mllm.vision.num_attention_heads", 4, 1);
  v.intermediate_size = cfg.get_int("mllm.vision.intermediate_size", 256, 1);
  v.qkv_bias = true;
  if (v.hidden_size % v.num_attention_heads != 0)
    fail("config: mllm.vision.hidden_size {} is not a multiple of mllm.vision.num_attention_heads {}", v.hidden_size,
         v.num_attention_heads);
  c.model.tile_size = v.image_size;
  if (c.model.tile_size % (2 * v.patch_size) != 0)
    fail("config: mllm.vision.image_size {} must be a multiple of 2 × mllm.vision.patch_size ({}) for pixel shuffle",
         c.model.tile_size, 2 * v.patch_size);
  auto& l = c.model.llm;
  l.hidden_size = cfg.get_int("mllm.llm.hidden_size", 64, 1);
  l.num_hidden_layers = cfg.get_int("mllm.llm.num_hidden_layers", 2, 1);
  l.num_attention_heads = cfg.get_int("mllm.llm.num_attention_heads", 4, 1);
  l.num_key_value_heads = cfg.get_int("mllm.llm.num_key_value_heads", 2, 1);
  l.head_dim = cfg.get_int("mllm.llm.head_dim", 16, 2);
  l.intermediate_size = cfg.get_int("mllm.llm.intermediate_size", 192, 1);
  l.rope_theta = cfg.get_double("mllm.llm.rope_theta", 10000.0, 1.0);
  l.tie_word_embeddings = false;
  if (l.num_attention_heads % l.num_key_value_heads != 0)
    fail("config: mllm.llm.num_attention_heads {} is not a multiple of mllm.llm.num_key_value_heads {}",
         l.num_attention_heads, l.num_key_value_heads);
  if (l.head_dim % 2 != 0) fail("config: mllm.llm.head_dim {} must be even (RoPE rotates pairs)", l.head_dim);

  c.loop = LoopConfig::from_config(cfg, default_loop());
  c.batch_size = cfg.get_int("train.batch_size", c.batch_size, 1, kMaxBatchSize);
  c.init_std = cfg.get_double("train.init_std", c.init_std, 0.0, 1.0);
  c.eval_samples = cfg.get_int("train.eval_samples", c.eval_samples, 1);
  c.eval_max_new_tokens = cfg.get_int("train.eval_max_new_tokens", c.eval_max_new_tokens, 1);
  c.eval_examples = cfg.get_int("train.eval_examples", c.eval_examples, 0);
  c.data_seed = static_cast<uint64_t>(cfg.get_int("data.seed", 0, 0));
  c.stream_offset = static_cast<uint64_t>(cfg.get_int("data.stream_offset", int64_t(c.stream_offset), 1));
  c.image_size = static_cast<int>(cfg.get_int("data.size", c.image_size, 32, 64));

  auto tok = Tokenizer::load(c.tokenizer);
  l.vocab_size = tok.vocab_size();
  c.model.image_token_id = special_id(tok, "<IMG_CONTEXT>", c.tokenizer);
  for (const char* t : {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>"}) special_id(tok, t, c.tokenizer);
  return c;
}

// ---------------------------------------------------------------------------------------------------- data

std::string caption_prompt(int64_t image_tokens) {
  std::string img = "<img>";
  for (int64_t i = 0; i < image_tokens; ++i) img += "<IMG_CONTEXT>";
  img += "</img>\n";
  return apply_chat_template({{"user", img + kCaptionQuestion}}, /*add_generation_prompt=*/true);
}

CaptionBatch make_caption_batch(const Tokenizer& tok, const std::vector<std::string>& captions,
                                int64_t image_tokens) {
  const auto prompt = tok.encode(caption_prompt(image_tokens));
  const int32_t im_end = special_id(tok, "<|im_end|>", "tokenizer"), pad = special_id(tok, "<|endoftext|>", "tokenizer");
  std::vector<std::vector<int32_t>> targets;
  size_t longest = 0;
  for (const auto& c : captions) {
    auto t = tok.encode(c);
    t.push_back(im_end);
    longest = std::max(longest, t.size());
    targets.push_back(std::move(t));
  }
  const int64_t B = static_cast<int64_t>(captions.size()), P = static_cast<int64_t>(prompt.size());
  const int64_t L = P + static_cast<int64_t>(longest);
  auto ids = torch::full({B, L}, pad, torch::kLong);
  auto mask = torch::zeros({B, L}, torch::kLong);
  auto labels = torch::full({B, L}, kIgnoreLabel, torch::kLong);
  auto I = ids.accessor<int64_t, 2>(), M = mask.accessor<int64_t, 2>(), Y = labels.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < P; ++t) I[b][t] = prompt[t], M[b][t] = 1;
    for (size_t k = 0; k < targets[b].size(); ++k) {
      const int64_t t = P + static_cast<int64_t>(k);
      I[b][t] = Y[b][t] = targets[b][k];
      M[b][t] = 1;
    }
  }
  return {ids, mask, labels, P};
}

WorldCaptions world_captions(uint64_t seed, uint64_t first, int64_t n, int size) {
  WorldCaptions out;
  std::vector<Image> images;
  images.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    auto s = world::make_captioned(seed, first + static_cast<uint64_t>(i), size);
    images.push_back(world::to_image(world::render(s.scene)));
    out.captions.push_back(s.spec.prompt);
    out.tags.push_back(s.spec.tag);
  }
  out.images = normalize_signed(images_to_batch(images));
  return out;
}

// ---------------------------------------------------------------------------------------------------- model

void init_understanding_weights(InternVLImpl& model, double std) {
  torch::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    const std::string& name = item.key();
    at::Tensor& p = item.value();
    const bool norm = name.find("norm") != std::string::npos || name.rfind("mlp1.0.", 0) == 0;
    const bool layer_scale = name.size() > 4 && (name.ends_with(".ls1") || name.ends_with(".ls2"));
    if (norm || layer_scale) continue;  // LayerNorm/RMSNorm 1 and 0, LayerScale 0.1: as constructed
    if (name.ends_with(".bias"))
      p.zero_();
    else
      p.normal_(0.0, std);
  }
}

namespace {

// Logits [B, L, V] of the whole batch.
at::Tensor caption_logits(InternVLImpl& model, const CaptionBatch& batch, const at::Tensor& pixel_values) {
  auto out = model.forward(batch.input_ids, batch.attention_mask, pixel_values);
  return model.language_model->lm_head->forward(out.last_hidden_state);
}

}  // namespace

at::Tensor caption_loss(InternVLImpl& model, const CaptionBatch& batch, const at::Tensor& pixel_values) {
  auto logits = caption_logits(model, batch, pixel_values);
  const int64_t V = logits.size(-1);
  auto pred = logits.slice(1, 0, -1).reshape({-1, V});
  auto target = batch.labels.slice(1, 1).reshape({-1});
  return torch::nn::functional::cross_entropy(
      pred.to(torch::kFloat32), target,
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnoreLabel));
}

std::vector<std::string> generate_captions(InternVLImpl& model, const Tokenizer& tok, const at::Tensor& pixel_values,
                                           int64_t max_new_tokens) {
  torch::NoGradGuard no_grad;
  const int64_t B = pixel_values.size(0);
  const int32_t im_end = special_id(tok, "<|im_end|>", "tokenizer"), eot = special_id(tok, "<|endoftext|>", "tokenizer");
  const auto prompt = tok.encode(caption_prompt(model.config.tokens_per_tile()));
  auto ids = torch::tensor(std::vector<int64_t>(prompt.begin(), prompt.end()), torch::kLong).unsqueeze(0).repeat({B, 1});
  // Every prompt has the same length (only the image differs), so the prefix needs no padding.
  auto embeds = model.splice_image_tokens(ids, model.embed_tokens(ids), model.image_tokens(pixel_values));
  auto out = model.forward_embeds(embeds, {}, {}, nullptr, /*use_cache=*/true);
  auto& head = model.language_model->lm_head;
  std::vector<std::vector<int32_t>> generated(B);
  std::vector<bool> done(B, false);
  auto next = head->forward(out.last_hidden_state.select(1, -1)).argmax(-1);  // [B]
  for (int64_t step = 0; step < max_new_tokens; ++step) {
    auto n = next.accessor<int64_t, 1>();
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      if (n[b] == im_end || n[b] == eot) {
        done[b] = true;
        continue;
      }
      generated[b].push_back(static_cast<int32_t>(n[b]));
      all_done = false;
    }
    if (all_done || step + 1 == max_new_tokens) break;
    auto r = model.forward_embeds(model.embed_tokens(next.unsqueeze(1)), {}, {}, &out.cache, /*use_cache=*/true);
    out.cache = std::move(r.cache);
    next = head->forward(r.last_hidden_state.select(1, -1)).argmax(-1);
  }
  std::vector<std::string> texts;
  for (const auto& g : generated) texts.push_back(tok.decode(g, /*skip_special_tokens=*/true));
  return texts;
}

nlohmann::json evaluate_captions(InternVLImpl& model, const Tokenizer& tok, const WorldCaptions& data,
                                 int64_t max_new_tokens, int64_t examples, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const int64_t N = static_cast<int64_t>(data.captions.size());
  CaptionTotals all;
  std::map<std::string, CaptionTotals> by_tag;
  int64_t token_hits = 0, token_total = 0;
  auto rows = nlohmann::json::array();
  for (int64_t first = 0; first < N; first += batch_size) {
    const int64_t n = std::min(batch_size, N - first);
    std::vector<std::string> refs(data.captions.begin() + first, data.captions.begin() + first + n);
    auto pixels = internvl_condition_pixels(data.images.slice(0, first, first + n), model.config.tile_size);
    // Teacher forcing: the argmax at t against the label at t + 1.
    auto batch = make_caption_batch(tok, refs, model.config.tokens_per_tile());
    auto pred = caption_logits(model, batch, pixels).slice(1, 0, -1).argmax(-1);
    auto target = batch.labels.slice(1, 1);
    auto counted = target != kIgnoreLabel;
    token_hits += ((pred == target) & counted).sum().item<int64_t>();
    token_total += counted.sum().item<int64_t>();

    auto gen = generate_captions(model, tok, pixels, max_new_tokens);
    for (int64_t i = 0; i < n; ++i) {
      const auto s = score_caption(refs[i], gen[i]);
      all.add(s);
      by_tag[data.tags[first + i]].add(s);
      if (static_cast<int64_t>(rows.size()) < examples)
        rows.push_back({{"tag", data.tags[first + i]}, {"reference", refs[i]}, {"generated", gen[i]},
                        {"content_matched", s.matched}, {"content_words", s.reference_words}});
    }
  }
  if (was_training) model.train();
  auto summary = [](const CaptionTotals& t) {
    return nlohmann::json{{"captions", t.captions},
                          {"exact_match", t.exact_rate()},
                          {"content_word_accuracy", t.content_accuracy()},
                          {"content_all_match", t.all_match_rate()}};
  };
  nlohmann::json j = summary(all);
  j["token_accuracy"] = token_total ? double(token_hits) / double(token_total) : 0.0;
  j["target_tokens"] = token_total;
  for (auto& [tag, t] : by_tag) j["by_tag"][tag] = summary(t);
  j["examples"] = rows;
  return j;
}

// ---------------------------------------------------------------------------------------------------- training

namespace {

struct StepData {
  CaptionBatch batch;
  at::Tensor pixels;
};

// Captioning on the shared loop. Micro-batch k = step·grad_accum + micro is stream indices [k·B, (k+1)·B): it depends
// on k alone, so the next one is rendered on another thread while this one trains (rendering costs about a fifth of
// a step).
class UnderstandingStage : public TrainStage {
 public:
  UnderstandingStage(const UnderstandingConfig& c, Tokenizer tok, InternVL model)
      : c_(c), tok_(std::move(tok)), model_(std::move(model)) {}

  std::string name() const override { return "understanding"; }
  NamedTensors parameters() override { return trainable_parameters(*model_); }
  void set_training(bool on) override { model_->train(on); }
  MicroStep micro_step(int64_t step, int64_t micro, double scale) override {
    const int64_t k = step * c_.loop.grad_accum + micro;
    StepData data = next_k_ == k && next_.valid() ? next_.get() : prepare(k);
    if (k + 1 < c_.loop.steps * c_.loop.grad_accum) {
      next_ = std::async(std::launch::async, [this, n = k + 1] { return prepare(n); });
      next_k_ = k + 1;
    }
    auto loss = caption_loss(*model_, data.batch, data.pixels);
    (loss * scale).backward();
    return {loss.item<double>(), c_.batch_size, {}};
  }
  void export_model(const std::string& dir) override {
    save_internvl(*model_, dir);
    fs::copy_file(c_.tokenizer, dir + "/tokenizer.json", fs::copy_options::overwrite_existing);
  }

 private:
  StepData prepare(int64_t k) const {
    auto data = world_captions(c_.stream_seed(), static_cast<uint64_t>(k * c_.batch_size), c_.batch_size,
                               c_.image_size);
    return {make_caption_batch(tok_, data.captions, c_.model.tokens_per_tile()),
            internvl_condition_pixels(data.images, c_.model.tile_size)};
  }

  const UnderstandingConfig& c_;
  Tokenizer tok_;
  InternVL model_;
  std::future<StepData> next_;
  int64_t next_k_ = -1;
};

// Scores the exported model as every consumer will load it; writes RUN/caption_eval.json and a metrics record.
nlohmann::json evaluate_export(const UnderstandingConfig& c, const RunDir& run, const std::string& model_dir,
                               double train_seconds) {
  auto frozen = load_internvl(model_dir);
  auto held_out = world_captions(c.stream_seed(), kEvalFirstIndex, c.eval_samples, c.image_size);
  auto eval = evaluate_captions(*frozen, Tokenizer::load(model_dir), held_out, c.eval_max_new_tokens, c.eval_examples);
  eval["train_seconds"] = train_seconds;
  eval["steps"] = c.loop.steps;
  eval["batch_size"] = c.batch_size;
  write_file_atomic(run.file("caption_eval.json"), eval.dump(2) + "\n");
  MetricsWriter(run.file("metrics.jsonl"), /*append=*/true)
      .write({{"event", "caption_eval"}, {"token_accuracy", eval["token_accuracy"]},
              {"exact_match", eval["exact_match"]}, {"content_word_accuracy", eval["content_word_accuracy"]},
              {"content_all_match", eval["content_all_match"]}});
  return eval;
}

}  // namespace

UnderstandingResult train_understanding(Config& cfg, const std::string& run_dir, bool resume) {
  const auto t_start = Clock::now();
  auto c = UnderstandingConfig::from_config(cfg);
  cfg.check_unused();
  auto run = RunDir::open(run_dir, resume);
  run.attach_log();
  run.write_config(cfg);
  apply_process_settings(c.loop);

  torch::manual_seed(c.loop.seed);
  InternVL model(c.model, /*with_lm_head=*/true);
  if (c.init_std > 0) init_understanding_weights(*model, c.init_std);
  spdlog::info("understanding: InternVL {} params (ViT {}x{} d{}, LLM {}x d{}, vocab {}), {} image tokens per "
               "image; {} steps x batch {}",
               count_parameters(*model), c.model.vision.num_hidden_layers, c.model.vision.patch_size,
               c.model.vision.hidden_size, c.model.llm.num_hidden_layers, c.model.llm.hidden_size,
               c.model.llm.vocab_size, c.model.tokens_per_tile(), c.loop.steps, c.batch_size);
  UnderstandingStage stage(c, Tokenizer::load(c.tokenizer), model);
  auto loop = run_training(stage, c.loop, run, resume);
  UnderstandingResult r;
  if (!loop.finished) return r;
  r.finished = true;
  r.model_dir = loop.model_dir;
  r.train_seconds = loop.seconds;
  r.eval = evaluate_export(c, run, r.model_dir, r.train_seconds);
  r.total_seconds = seconds_since(t_start);
  spdlog::info("understanding: caption eval on {} held-out images: token acc {:.3f}, exact {:.3f}, content words "
               "{:.3f}, all content words {:.3f} (train {:.1f}s, total {:.1f}s)",
               c.eval_samples, r.eval["token_accuracy"].get<double>(), r.eval["exact_match"].get<double>(),
               r.eval["content_word_accuracy"].get<double>(), r.eval["content_all_match"].get<double>(),
               r.train_seconds, r.total_seconds);
  return r;
}

}  // namespace iomm
