// Reading a tokenizer from its files: Hugging Face tokenizer.json (model, normalizer, pre_tokenizer, added
// tokens), or the older vocab.json + merges.txt (+ tokenizer_config.json, added_tokens.json) layout. Every field
// read names its file and field in errors; JSON nesting is bounded before parsing (core/json_limits.h).
#include "text/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <mutex>
#include <queue>
#include <shared_mutex>
#include <sstream>
#include <unordered_map>
#include <unordered_set>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/json_limits.h"
#include "text/tokenizer_impl.h"

namespace iomm {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace tokenizer_detail;

namespace {

json read_json(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) fail("{}: cannot open the file for reading", file.string());
  std::ostringstream buf;  // parsing from memory is several times faster than from the stream
  buf << in.rdbuf();
  check_json_nesting(buf.view(), file.string());  // before the DOM: copies of a deep value overflow the stack
  try {
    return json::parse(buf.view());
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({}); re-download or re-export the tokenizer files", file.string(), e.what());
  }
}

// A value of a tokenizer file with its path in the file, so that every type error names both:
// `FILE: field 'model.vocab["x"]' must be an integer from 0 to 16777215, got a string "1"`.
class Field {
 public:
  Field(const json& j, std::string file, std::string path = "") : j_(&j), file_(std::move(file)), path_(std::move(path)) {}

  // A member of an object; null when absent (or when this is not an object: the caller's own check names that).
  Field operator[](const std::string& key) const {
    static const json kNull;
    auto it = j_->is_object() ? j_->find(key) : j_->end();
    return Field(j_->is_object() && it != j_->end() ? *it : kNull, file_, path_.empty() ? key : path_ + "." + key);
  }
  // An entry of a map-like object ({token: id}) or of an array, named `path["key"]` / `path[i]`.
  Field entry(const std::string& key, const json& v) const { return Field(v, file_, path_ + "[" + json(key).dump() + "]"); }
  Field element(size_t i) const { return Field(array().at(i), file_, fmt::format("{}[{}]", path_, i)); }

  const json& raw() const { return *j_; }
  const std::string& path() const { return path_; }
  bool null() const { return j_->is_null(); }
  std::string str() const {
    if (!j_->is_string()) wrong("a string");
    return j_->get<std::string>();
  }
  std::string str_or(const std::string& dflt) const { return null() ? dflt : str(); }
  bool flag(bool dflt) const {
    if (null()) return dflt;
    if (!j_->is_boolean()) wrong("true or false");
    return j_->get<bool>();
  }
  double number() const {
    if (!j_->is_number()) wrong("a number");
    return j_->get<double>();
  }
  int64_t integer(int64_t lo, int64_t hi) const {  // in [lo, hi]
    bool ok = j_->is_number_integer() && (j_->is_number_unsigned() ? j_->get<uint64_t>() <= uint64_t(hi)
                                                                   : j_->get<int64_t>() <= hi);
    if (!ok || j_->get<int64_t>() < lo) wrong(fmt::format("an integer from {} to {}", lo, hi));
    return j_->get<int64_t>();
  }
  const json& object() const {
    if (!j_->is_object()) wrong("an object");
    return *j_;
  }
  const json& array() const {
    if (!j_->is_array()) wrong("an array");
    return *j_;
  }
  [[noreturn]] void wrong(const std::string& expected) const {
    fail("{}: field '{}' must be {}, got {}; fix the field, or re-export the tokenizer with Hugging Face tokenizers",
         file_, path_, expected, what_is(*j_));
  }

 private:
  static std::string what_is(const json& j) {
    if (j.is_null()) return "null (or nothing)";
    if (j.is_object() || j.is_array()) return j.is_object() ? "an object" : "an array";
    std::string v = j.dump();
    if (v.size() > 40) v = v.substr(0, 37) + "...";
    return fmt::format("a {} {}", j.type_name(), v);  // a string "1", a number 1.5, a boolean true
  }
  const json* j_;
  std::string file_, path_;
};

std::string type_of(const Field& f) { return f.raw().is_object() ? f["type"].str_or("") : std::string(); }

// For messages: `"Type"`, or the JSON itself when it has no type.
std::string describe(const Field& f) {
  std::string type = type_of(f);
  return type.empty() ? f.raw().dump() : fmt::format("\"{}\"", type);
}

// vocab: {token: id}; merges: "A B" strings or ["A", "B"] pairs (rank = position).
void build_model(Tokenizer::Impl& m, const Field& vocab, const std::vector<std::pair<std::string, std::string>>& merges) {
  m.vocab.reserve(vocab.object().size());
  for (const auto& [tok, id] : vocab.object().items()) {
    // The Field (and its path string) only for a bad entry: a real vocabulary has 150k good ones.
    bool good = id.is_number_unsigned() && id.get<uint64_t>() < uint64_t(kMaxId);
    m.vocab[tok] = static_cast<int32_t>(good ? id.get<int64_t>() : vocab.entry(tok, id).integer(0, kMaxId - 1));
  }
  m.merges.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    auto ia = m.vocab.find(a), ib = m.vocab.find(b), ic = m.vocab.find(a + b);
    const std::string& missing = ia == m.vocab.end() ? a : ib == m.vocab.end() ? b : a + b;
    if (ia == m.vocab.end() || ib == m.vocab.end() || ic == m.vocab.end())
      fail("{}: merge #{} (\"{} {}\") uses \"{}\", which is not in the vocabulary; the merges do not belong to this "
           "vocabulary",
           m.source, rank, a, b, missing);
    m.merges[pair_key(ia->second, ib->second)] = {static_cast<int32_t>(rank), ic->second};  // last duplicate wins
  }
}

std::pair<std::string, std::string> split_merge(const std::string& line, const std::string& where) {
  size_t sp = line.find(' ');
  if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
    fail("{}: merge \"{}\" is not two tokens separated by one space", where, line);
  return {line.substr(0, sp), line.substr(sp + 1)};
}

AddedToken added_from_json(const Field& t, int32_t id) {
  t.object();
  AddedToken a;
  a.id = id;
  a.content = t["content"].str();
  a.special = t["special"].flag(false);
  a.lstrip = t["lstrip"].flag(false);
  a.rstrip = t["rstrip"].flag(false);
  a.single_word = t["single_word"].flag(false);
  a.normalized = t["normalized"].flag(!a.special);
  return a;
}

// Ids as tokenizers assigns them when it loads added tokens (AddedVocabulary::add_tokens): a content already
// known keeps its id (model vocabulary included); a new one gets the next id counting from the number of model
// tokens. The id written in the file is only a check, as in tokenizers (it warns too).
void add_tokens(Tokenizer::Impl& m, std::vector<AddedToken> tokens) {
  std::unordered_map<std::string, size_t> index;  // content -> position in m.added
  int32_t next_id = static_cast<int32_t>(m.vocab.size());
  for (AddedToken& t : tokens) {
    if (t.content.empty()) continue;
    int32_t expected = t.id;
    if (auto it = index.find(t.content); it != index.end()) {
      t.id = m.added[it->second].id;
      m.added[it->second] = t;  // a repeated content: the later flags win
      continue;
    }
    if (auto it = m.vocab.find(t.content); it != m.vocab.end())
      t.id = it->second;
    else
      t.id = next_id++;
    if (t.id >= kMaxId) fail("{}: added token \"{}\" would get id {}, beyond {}", m.source, t.content, t.id, kMaxId);
    if (expected >= 0 && expected != t.id)
      spdlog::warn("{}: added token \"{}\" is listed with id {} but gets id {} (as in Hugging Face tokenizers)",
                   m.source, t.content, expected, t.id);
    index[t.content] = m.added.size();
    m.added.push_back(std::move(t));
  }
}

void parse_normalizer(Tokenizer::Impl& m, const Field& n) {
  if (n.null()) return;
  std::string type = type_of(n);
  if (type == "NFC") {
    m.nfc = true;
    return;
  }
  if (type == "Sequence") {
    Field list = n["normalizers"];
    for (size_t i = 0; i < list.array().size(); ++i) parse_normalizer(m, list.element(i));
    return;
  }
  fail("{}: normalizer.type is \"{}\"; only NFC (or none) is supported, as in Qwen2's tokenizer.json. Use a "
       "byte-level BPE tokenizer such as Qwen2's",
       m.source, type.empty() ? n.raw().dump() : type);
}

// A Split step of the pre-tokenizer: its pattern, compiled.
void parse_split(Tokenizer::Impl& m, const Field& s, size_t i) {
  std::string behavior = s["behavior"].str_or("");
  // With Isolated, matches and gaps are both pieces, so `invert` changes nothing.
  if (behavior != "Isolated")
    fail("{}: pre_tokenizer step {} (Split) has behavior \"{}\"; only \"Isolated\" is supported", m.source, i,
         behavior);
  Field pat = s["pattern"];
  pat.object();
  if (!pat["Regex"].null())
    m.splits.push_back(compile(pat["Regex"].str(), 0, m.source + ": " + pat["Regex"].path()));
  else if (!pat["String"].null())
    m.splits.push_back(compile(pat["String"].str(), UREGEX_LITERAL, m.source + ": " + pat["String"].path()));
  else
    fail("{}: pre_tokenizer step {} (Split) has no pattern {{\"Regex\": ...}} or {{\"String\": ...}}", m.source, i);
}

void parse_pre_tokenizer(Tokenizer::Impl& m, const Field& p) {
  std::vector<Field> steps;
  std::string type = type_of(p);
  if (type == "Sequence") {
    Field list = p["pretokenizers"];
    for (size_t i = 0; i < list.array().size(); ++i) steps.push_back(list.element(i));
  } else if (!p.null()) {
    steps.push_back(p);
  }
  if (steps.empty() || type_of(steps.back()) != "ByteLevel")
    fail("{}: pre_tokenizer is {}; iomm supports byte-level BPE only: Split pre-tokenizers followed by a "
         "ByteLevel pre-tokenizer (as in Qwen2's tokenizer.json)",
         m.source, describe(p));
  for (size_t i = 0; i + 1 < steps.size(); ++i) {
    if (type_of(steps[i]) != "Split")
      fail("{}: pre_tokenizer step {} has type \"{}\"; only Split steps may come before ByteLevel", m.source, i,
           type_of(steps[i]));
    parse_split(m, steps[i], i);
  }
  const Field& bl = steps.back();
  m.add_prefix_space = bl["add_prefix_space"].flag(true);
  if (bl["use_regex"].flag(true)) m.byte_level_regex = compile(kGpt2Pattern, 0, "GPT-2 byte-level regex");
}

void check_post_processor(Tokenizer::Impl& m, const Field& p) {
  std::string type = type_of(p);
  if (p.null() || type == "ByteLevel") return;  // ByteLevel only trims offsets: it adds no ids
  fail("{}: post_processor.type is \"{}\"; iomm adds no special tokens around the text, so only null or "
       "ByteLevel (as in Qwen2's tokenizer.json) is supported",
       m.source, type.empty() ? p.raw().dump() : type);
}

// model.merges: "A B" strings or ["A", "B"] pairs.
std::vector<std::pair<std::string, std::string>> parse_merges(const Field& list, const std::string& source) {
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(list.array().size());
  const std::string where = source + ": " + list.path();
  for (size_t i = 0; i < list.array().size(); ++i) {
    const json& v = list.raw()[i];
    if (v.is_string())
      merges.push_back(split_merge(v.get<std::string>(), where));
    else if (v.is_array() && v.size() == 2 && v[0].is_string() && v[1].is_string())
      merges.emplace_back(v[0].get<std::string>(), v[1].get<std::string>());
    else
      list.element(i).wrong("\"A B\" or [\"A\", \"B\"]");
  }
  return merges;
}

// The BPE model's options that iomm refuses: they change what encode() returns.
void check_bpe_options(const Tokenizer::Impl& m, const Field& model) {
  std::string mtype = model["type"].str_or("BPE");
  if (mtype != "BPE")
    fail("{}: model.type is \"{}\"; iomm supports byte-level BPE tokenizers only (model.type \"BPE\" with a "
         "ByteLevel pre-tokenizer, as in Qwen2's tokenizer.json)",
         m.source, mtype);
  if (!model["dropout"].null() && model["dropout"].number() != 0.0)
    fail("{}: model.dropout is {}; BPE dropout makes encoding random: set it to null", m.source,
         model["dropout"].raw().dump());
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (std::string v = model[key].str_or(""); !v.empty())
      fail("{}: model.{} is \"{}\"; byte-level BPE uses none: set it to \"\" or null", m.source, key, v);
  if (model["byte_fallback"].flag(false))
    fail("{}: model.byte_fallback is true; that is a SentencePiece-style BPE, not byte-level BPE", m.source);
  if (model["vocab"].null() || model["merges"].null())
    fail("{}: model has no \"vocab\" or no \"merges\"; expected a BPE model", m.source);
}

void parse_bpe_model(Tokenizer::Impl& m, const Field& model) {
  check_bpe_options(m, model);
  build_model(m, model["vocab"], parse_merges(model["merges"], m.source));
  m.ignore_merges = model["ignore_merges"].flag(false);
  if (!model["unk_token"].null()) {
    std::string unk = model["unk_token"].str();
    auto it = m.vocab.find(unk);
    if (it == m.vocab.end()) fail("{}: model.unk_token \"{}\" is not in model.vocab", m.source, unk);
    m.unk_id = it->second;
  }
  m.fuse_unk = model["fuse_unk"].flag(false);
}

std::shared_ptr<Tokenizer::Impl> load_tokenizer_json(const fs::path& file) {
  auto m = std::make_shared<Tokenizer::Impl>();
  m->source = file.string();
  json j = read_json(file);
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
    fail("{}: no \"model\" object; expected a Hugging Face `tokenizers` tokenizer.json", m->source);
  Field root(j, m->source);
  parse_bpe_model(*m, root["model"]);
  parse_normalizer(*m, root["normalizer"]);
  parse_pre_tokenizer(*m, root["pre_tokenizer"]);
  check_post_processor(*m, root["post_processor"]);
  Field dec = root["decoder"];
  if (!dec.null() && type_of(dec) != "ByteLevel")
    spdlog::warn("{}: decoder.type is \"{}\"; decode() uses the ByteLevel decoder anyway", m->source, type_of(dec));
  for (const char* key : {"truncation", "padding"})
    if (!root[key].null())
      spdlog::warn("{}: \"{}\" is set; iomm ignores it (it never truncates or pads in the tokenizer)", m->source, key);

  std::vector<AddedToken> added;
  Field list = root["added_tokens"];
  if (!list.null())
    for (size_t i = 0; i < list.array().size(); ++i) {
      Field t = list.element(i);
      t.object();
      added.push_back(added_from_json(t, static_cast<int32_t>(t["id"].integer(0, INT32_MAX))));
    }
  add_tokens(*m, std::move(added));
  m->finish();
  return m;
}

// Special-token names that transformers takes from tokenizer_config.json / special_tokens_map.json.
void collect_special_names(const json& cfg, std::unordered_set<std::string>& names) {
  auto add = [&](const json& v) {
    if (v.is_string()) names.insert(v.get<std::string>());
    if (v.is_object() && v.contains("content") && v["content"].is_string()) names.insert(v["content"].get<std::string>());
  };
  for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"})
    if (cfg.contains(key)) add(cfg[key]);
  for (const char* key : {"additional_special_tokens", "extra_special_tokens"})
    if (cfg.contains(key) && cfg[key].is_array())
      for (const json& v : cfg[key]) add(v);
}

// Added tokens of the vocab.json + merges.txt layout: tokenizer_config.json's added_tokens_decoder, or the legacy
// added_tokens.json {content: id} (special when named as a special token, and then not normalized).
std::vector<AddedToken> legacy_added_tokens(const fs::path& dir, const json& cfg) {
  std::vector<AddedToken> added;
  Field decoder = Field(cfg, (dir / "tokenizer_config.json").string())["added_tokens_decoder"];
  if (!decoder.null()) {
    for (const auto& [key, t] : decoder.object().items()) {
      int32_t id = -1;
      try {
        id = std::stoi(key);
      } catch (const std::exception&) {
        fail("{}: key \"{}\" of {} is not an integer id", (dir / "tokenizer_config.json").string(), key,
             decoder.path());
      }
      added.push_back(added_from_json(decoder.entry(key, t), id));
    }
  } else if (fs::exists(dir / "added_tokens.json")) {
    std::unordered_set<std::string> names;
    if (cfg.is_object()) collect_special_names(cfg, names);
    if (fs::exists(dir / "special_tokens_map.json")) collect_special_names(read_json(dir / "special_tokens_map.json"), names);
    json at = read_json(dir / "added_tokens.json");
    Field file(at, (dir / "added_tokens.json").string());
    for (const auto& [content, id] : file.object().items()) {
      AddedToken t;
      t.id = static_cast<int32_t>(file.entry(content, id).integer(0, INT32_MAX));
      t.content = content;
      t.special = names.count(content) > 0;
      t.normalized = !t.special;
      added.push_back(std::move(t));
    }
  }
  return added;
}

std::shared_ptr<Tokenizer::Impl> load_vocab_merges(const fs::path& dir) {
  auto m = std::make_shared<Tokenizer::Impl>();
  fs::path vocab_file = dir / "vocab.json", merges_file = dir / "merges.txt";
  m->source = vocab_file.string();
  json vocab = read_json(vocab_file);

  std::ifstream in(merges_file, std::ios::binary);
  if (!in) fail("{}: cannot open the file for reading", merges_file.string());
  std::vector<std::pair<std::string, std::string>> merges;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    merges.push_back(split_merge(line, merges_file.string()));
  }
  build_model(*m, Field(vocab, vocab_file.string()), merges);
  m->source = dir.string();

  // What transformers' Qwen2Tokenizer builds around vocab.json + merges.txt.
  m->nfc = true;
  m->splits.push_back(compile(kQwen2Pattern, 0, "Qwen2 pre-tokenizer pattern"));
  json cfg;
  if (fs::exists(dir / "tokenizer_config.json")) {
    cfg = read_json(dir / "tokenizer_config.json");
    Field(cfg, (dir / "tokenizer_config.json").string()).object();
  }
  m->add_prefix_space = Field(cfg, (dir / "tokenizer_config.json").string())["add_prefix_space"].flag(false);

  std::vector<AddedToken> added = legacy_added_tokens(dir, cfg);
  std::sort(added.begin(), added.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  add_tokens(*m, std::move(added));
  m->finish();
  return m;
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& path) {
  fs::path p(path);
  if (!fs::exists(p))
    fail("{}: no such file or directory; pass a tokenizer.json or the model directory that holds it", path);
  if (fs::is_directory(p)) {
    if (fs::exists(p / "tokenizer.json")) return Tokenizer(load_tokenizer_json(p / "tokenizer.json"));
    if (fs::exists(p / "vocab.json") && fs::exists(p / "merges.txt")) return Tokenizer(load_vocab_merges(p));
    fail("{}: the directory has neither tokenizer.json nor vocab.json + merges.txt; point --tokenizer at the "
         "model directory (e.g. InternVL3-2B) or its tokenizer.json",
         path);
  }
  if (p.filename() == "vocab.json" || p.filename() == "merges.txt") return Tokenizer(load_vocab_merges(p.parent_path()));
  return Tokenizer(load_tokenizer_json(p));
}

}  // namespace iomm
