// Not tests: the fixtures of testing/tiny_fixtures.h (a *_test.cpp so that only iomm_tests compiles it).
#include "testing/tiny_fixtures.h"

#include <cstdlib>
#include <fstream>
#include <stdexcept>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "models/autoencoder.h"
#include "models/internvl.h"
#include "core/tensor_io.h"
#include "models/weights.h"
#include "text/tokenizer.h"
#include "world/corpus.h"

namespace iomm::fixtures {

using nlohmann::json;

std::string temp_dir(const std::string& name) {
  std::string tmpl = ::testing::TempDir() + "/iomm_" + name + "_XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed for " + tmpl);
  return tmpl;
}

std::string byte_tokenizer_json() {
  json vocab = json::object();
  const auto& table = bytes_to_unicode();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    char32_t cp = table[size_t(b)];
    if (cp < 0x80) {
      s += char(cp);
    } else {
      s += char(0xC0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3F));
    }
    vocab[s] = b;
  }
  json added = json::array();
  const char* names[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"};
  for (int i = 0; i < 6; ++i)
    added.push_back({{"id", 256 + i}, {"content", names[i]}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  json bl = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", true}};
  json model = {{"type", "BPE"},          {"vocab", vocab},         {"merges", json::array()},
                {"dropout", nullptr},     {"unk_token", nullptr},   {"continuing_subword_prefix", ""},
                {"end_of_word_suffix", ""}, {"fuse_unk", false},    {"byte_fallback", false},
                {"ignore_merges", false}};
  return json{{"version", "1.0"}, {"added_tokens", added}, {"normalizer", nullptr},
              {"pre_tokenizer", bl}, {"decoder", bl},       {"model", model}}
      .dump();
}

std::string tiny_mllm_dir() {
  static std::string dir = [] {
    InternVLConfig c;
    c.vision.hidden_size = 16;
    c.vision.num_hidden_layers = 1;
    c.vision.num_attention_heads = 2;
    c.vision.intermediate_size = 32;
    c.vision.image_size = 16;
    c.vision.patch_size = 4;
    c.llm.hidden_size = 32;
    c.llm.num_hidden_layers = 2;
    c.llm.num_attention_heads = 4;
    c.llm.num_key_value_heads = 2;
    c.llm.head_dim = 8;
    c.llm.intermediate_size = 48;
    c.llm.vocab_size = 262;
    c.image_token_id = kByteTokenizerImgContext;
    c.tile_size = 16;
    torch::manual_seed(0);
    InternVL m(c, true);
    {
      torch::NoGradGuard ng;
      for (auto& p : m->parameters()) p.normal_(0, 0.2);
    }
    std::string d = temp_dir("mllm");
    save_internvl(*m, d);
    std::ofstream(d + "/tokenizer.json") << byte_tokenizer_json();
    return d;
  }();
  return dir;
}

std::string tiny_corpus_dir() {
  static std::string dir = [] {
    std::string d = temp_dir("corpus");
    world::CorpusOptions o;
    o.out = d;
    o.image_only = 64;
    o.captioned = 64;
    o.shard_size = 32;
    o.progress = false;
    world::make_corpus(o);
    return d;
  }();
  return dir;
}

std::string tiny_flux_ae_dir(uint64_t seed, double perturb) {
  AutoencoderConfig c;
  c.block_out_channels = {16, 32};
  c.layers_per_block = 1;
  c.norm_num_groups = 8;
  c.scaling_factor = 0.7;
  c.shift_factor = -0.2;
  torch::manual_seed(seed);
  FluxAE m(c);
  {
    torch::NoGradGuard g;  // non-trivial norms, so every path carries signal
    for (auto& item : m->named_parameters())
      if (item.key().find("norm") != std::string::npos) item.value().add_(torch::randn_like(item.value()) * 0.2);
    m->encoder->conv_in->weight[0][0][0][0] += perturb;  // one encoder weight, for refusal tests
  }
  auto dir = temp_dir("flux_ae");
  std::ofstream(dir + "/config.json") << c.to_diffusers_json().dump();
  save_tensors(dir + "/ae.safetensors", module_state(*m));
  return dir;
}

}  // namespace iomm::fixtures
