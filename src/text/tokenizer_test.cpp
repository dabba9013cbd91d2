#include "text/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <stdlib.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"

using namespace iomm;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string utf8(char32_t c) {
  std::string s;
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
  return s;
}

// Byte-level form of a raw string (what vocabulary entries look like).
std::string bl(std::string_view raw) {
  std::string s;
  for (unsigned char b : raw) s += utf8(bytes_to_unicode()[b]);
  return s;
}

// Merged tokens get ids 256.. in this order; the 256 byte symbols have id = byte value.
const std::vector<std::pair<std::string, std::string>> kMerges = {
    {"l", "l"},    // 256 ll     (rank 0: beats "e l" below)
    {"h", "e"},    // 257 he
    {"he", "ll"},  // 258 hell
    {"hell", "o"}, // 259 hello
    {"Ġ", "w"},    // 260 Ġw
    {"o", "r"},    // 261 or
    {"e", "l"},    // 262 el
    {"a", "a"},    // 263 aa
    {"1", "2"},    // 264 12     (never applies: Qwen2 splits digits one by one)
    {"Ġ", "Ġ"},    // 265 ĠĠ
};

struct Ids {
  static constexpr int32_t ll = 256, he = 257, hell = 258, hello = 259, Gw = 260, orr = 261, el = 262, aa = 263,
                           sp2 = 265, xyz = 266, im_start = 267, im_end = 268, img = 269, mask = 270, rstr = 271,
                           word = 272, cafe = 273;
};

json tiny_json(bool merges_as_pairs = true) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[bl(std::string(1, static_cast<char>(b)))] = b;
  json merges = json::array();
  int32_t id = 256;
  for (const auto& [a, b] : kMerges) {
    vocab[a + b] = id++;
    merges.push_back(merges_as_pairs ? json::array({a, b}) : json(a + " " + b));
  }
  vocab["xyz"] = Ids::xyz;  // reachable only through ignore_merges
  auto added = [](int id, const std::string& content, bool special, json extra = json::object()) {
    json t = {{"id", id},        {"content", content}, {"single_word", false}, {"lstrip", false},
              {"rstrip", false}, {"normalized", false}, {"special", special}};
    t.update(extra);
    return t;
  };
  return {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens",
       {added(Ids::im_start, "<|im_start|>", true), added(Ids::im_end, "<|im_end|>", true),
        added(Ids::img, "<img>", false), added(Ids::mask, "<mask>", true, {{"lstrip", true}}),
        added(Ids::rstr, "[R]", true, {{"rstrip", true}}), added(Ids::word, "[W]", false, {{"single_word", true}}),
        // Matched on the NFC text: its decomposed spelling in the input still matches.
        added(Ids::cafe, "caf\xC3\xA9!", false, {{"normalized", true}})}},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", kQwen2Pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}}}}},
      {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", merges}}}};
}

// A fresh directory per call. (Not std::filesystem::remove_all: libtorch.so exports its own copy of that
// symbol, which the executable binds to, and it crashes on a non-empty directory.)
fs::path temp_dir(const std::string& name) {
  std::string tmpl = ::testing::TempDir() + "/iomm_tokenizer_" + name + "_XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed for " + tmpl);
  return tmpl;
}

fs::path write(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

Tokenizer load_json(const json& j, const std::string& name) {
  return Tokenizer::load(write(temp_dir(name) / "tokenizer.json", j.dump()).string());
}

const Tokenizer& tiny() {
  static const Tokenizer t = load_json(tiny_json(), "tiny");
  return t;
}

std::vector<int32_t> bytes_of(std::string_view s) {
  std::vector<int32_t> ids;
  for (unsigned char b : s) ids.push_back(b);
  return ids;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

TEST(TokenizerBytesToUnicode, IsTheGpt2Table) {
  const auto& t = bytes_to_unicode();
  std::set<char32_t> values(t.begin(), t.end());
  EXPECT_EQ(values.size(), 256u);  // a bijection
  for (int b = 33; b <= 126; ++b) EXPECT_EQ(t[b], static_cast<char32_t>(b));
  EXPECT_EQ(t[161], U'\u00A1');
  EXPECT_EQ(t[174], U'\u00AE');
  EXPECT_EQ(t[0], U'\u0100');   // the 68 unprintable bytes go to U+0100.. in byte order
  EXPECT_EQ(t['\n'], U'\u010A');  // Ċ
  EXPECT_EQ(t[' '], U'\u0120');   // Ġ
  EXPECT_EQ(t[127], U'\u0121');
  EXPECT_EQ(t[173], U'\u0143');  // the last one (soft hyphen)
  for (char32_t c : t) EXPECT_LT(c, U'\u0144');
}

TEST(TokenizerEncode, AppliesMergesByRank) {
  const Tokenizer& t = tiny();
  EXPECT_EQ(t.encode("hello world"), (std::vector<int32_t>{Ids::hello, Ids::Gw, Ids::orr, 'l', 'd'}));
  // "l l" (rank 0) wins over "e l" (rank 6) although "e l" is further left.
  EXPECT_EQ(t.encode("bell"), (std::vector<int32_t>{'b', 'e', Ids::ll}));
  EXPECT_EQ(t.encode("el"), (std::vector<int32_t>{Ids::el}));
  // Equal pairs merge left to right without overlap.
  EXPECT_EQ(t.encode("aaa"), (std::vector<int32_t>{Ids::aa, 'a'}));
  EXPECT_EQ(t.encode("aaaa"), (std::vector<int32_t>{Ids::aa, Ids::aa}));
  EXPECT_TRUE(t.encode("").empty());
}

TEST(TokenizerEncode, PreTokenizesWithTheQwen2Regex) {
  const Tokenizer& t = tiny();
  // Digits are single pieces, so the "1 2" merge never applies.
  EXPECT_EQ(t.encode("12"), bytes_of("12"));
  // "a  b": pieces "a", " ", " b"; the two spaces stay apart. Trailing spaces form one piece.
  EXPECT_EQ(t.encode("a  b"), bytes_of("a  b"));
  EXPECT_EQ(t.encode("a   "), (std::vector<int32_t>{'a', Ids::sp2, ' '}));
  // "\s*[\r\n]+" keeps spaces before a newline in one piece, where "Ġ Ġ" does merge.
  EXPECT_EQ(t.encode("a  \n"), (std::vector<int32_t>{'a', Ids::sp2, '\n'}));
  // Contractions are pieces of their own, in any case.
  EXPECT_EQ(t.encode("el'LL"), (std::vector<int32_t>{Ids::el, '\'', 'L', 'L'}));
}

TEST(TokenizerEncode, HandlesVeryLongRuns) {
  // 999,999 spaces (the last one goes with "x"): ICU's default regex backtrack stack would overflow here.
  std::vector<int32_t> ids = tiny().encode(std::string(1000000, ' ') + "x");
  ASSERT_EQ(ids.size(), 499999u + 1 + 2);
  EXPECT_EQ(ids.front(), Ids::sp2);
  EXPECT_EQ(ids[499999], ' ');
  EXPECT_EQ(ids.back(), 'x');
}

TEST(TokenizerEncode, SplitsOnAddedTokensFirst) {
  const Tokenizer& t = tiny();
  std::vector<int32_t> want = {Ids::im_start, 'u', 's', 'e', 'r', '\n', Ids::hello, Ids::im_end};
  EXPECT_EQ(t.encode("<|im_start|>user\nhello<|im_end|>"), want);
  EXPECT_EQ(t.encode("<img><img>"), (std::vector<int32_t>{Ids::img, Ids::img}));
  // A partial token is plain text.
  EXPECT_EQ(t.encode("<|im_start"), bytes_of("<|im_start"));
}

TEST(TokenizerEncode, HonoursAddedTokenFlags) {
  const Tokenizer& t = tiny();
  // lstrip swallows the whitespace on the left of <mask>.
  EXPECT_EQ(t.encode("a  <mask>b"), (std::vector<int32_t>{'a', Ids::mask, 'b'}));
  // rstrip swallows the whitespace on the right of [R].
  EXPECT_EQ(t.encode("[R]  b"), (std::vector<int32_t>{Ids::rstr, 'b'}));
  // single_word: [W] matches only outside words.
  EXPECT_EQ(t.encode("a[W]"), bytes_of("a[W]"));
  EXPECT_EQ(t.encode("[W] a"), (std::vector<int32_t>{Ids::word, ' ', 'a'}));
  // normalized: the decomposed e + U+0301 is matched after NFC.
  EXPECT_EQ(t.encode("caf" "e\xCC\x81" "!"), (std::vector<int32_t>{Ids::cafe}));
}

TEST(TokenizerEncode, NormalizesToNfc) {
  const Tokenizer& t = tiny();
  EXPECT_EQ(t.encode("e\xCC\x81"), t.encode("\xC3\xA9"));
  EXPECT_EQ(t.encode("\xC3\xA9"), (std::vector<int32_t>{0xC3, 0xA9}));
  // Canonical reordering (U+0327 has class 202 < 230), then composition: a U+0301 U+0327 -> U+00E1 U+0327.
  EXPECT_EQ(t.encode("a\xCC\x81\xCC\xA7"), t.encode("\xC3\xA1\xCC\xA7"));
  // As in tokenizers (Unicode 9.0 tables), a later character is not reordered: U+032E (class 220) stays before
  // the Gunjala Gondi virama U+11D97 (Unicode 11, class 9).
  EXPECT_EQ(t.encode("\xCC\xAE\xF0\x91\xB6\x97"), bytes_of("\xCC\xAE\xF0\x91\xB6\x97"));
}

TEST(TokenizerEncode, RejectsInvalidUtf8) {
  std::string msg = error_of([] { tiny().encode("ab\xC3"); });
  EXPECT_NE(msg.find("not valid UTF-8 (byte 2"), std::string::npos) << msg;
}

TEST(TokenizerEncode, MergesAsStringsEqualPairs) {
  Tokenizer strings = load_json(tiny_json(/*merges_as_pairs=*/false), "strings");
  for (const char* s : {"hello world", "bell", "aaa", "a   "}) EXPECT_EQ(strings.encode(s), tiny().encode(s)) << s;
}

TEST(TokenizerEncode, IgnoreMergesEmitsWholeVocabularyPieces) {
  json j = tiny_json();
  EXPECT_EQ(tiny().encode("xyz"), bytes_of("xyz"));
  j["model"]["ignore_merges"] = true;
  Tokenizer t = load_json(j, "ignore_merges");
  EXPECT_EQ(t.encode("xyz"), (std::vector<int32_t>{Ids::xyz}));
  EXPECT_EQ(t.encode("hello"), (std::vector<int32_t>{Ids::hello}));
}

TEST(TokenizerEncode, IsThreadSafe) {
  const Tokenizer& t = tiny();
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) texts.push_back("hello world " + std::to_string(i) + " bell aaa" + std::string(i % 7, ' '));
  Tokenizer serial = load_json(tiny_json(), "serial");  // its own, cold cache
  std::vector<std::vector<int32_t>> want;
  for (const auto& s : texts) want.push_back(serial.encode(s));
  std::vector<int> bad(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 5; ++rep)
        for (size_t i = 0; i < texts.size(); ++i) bad[k] += t.encode(texts[i]) != want[i];
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad, std::vector<int>(4, 0));
}

TEST(TokenizerDecode, RoundTrips) {
  const Tokenizer& t = tiny();
  for (const char* s : {"hello world", "a  b\r\n\tc", "\xE4\xBD\xA0\xE5\xA5\xBD", "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",
                        "<|im_start|>user\nhi<|im_end|>\n", "[W] x <img>"})
    EXPECT_EQ(t.decode(t.encode(s)), s) << s;
}

TEST(TokenizerDecode, SkipsSpecialTokensAndReplacesBrokenUtf8) {
  const Tokenizer& t = tiny();
  std::vector<int32_t> ids = t.encode("<|im_start|>hi<img><|im_end|>");
  EXPECT_EQ(t.decode(ids, /*skip_special_tokens=*/true), "hi<img>");  // <img> is not special
  EXPECT_EQ(t.decode({0xC3}), "\xEF\xBF\xBD");                       // a lone lead byte -> U+FFFD
  std::string msg = error_of([&] { t.decode({99999}); });
  EXPECT_NE(msg.find("99999"), std::string::npos) << msg;
}

TEST(TokenizerVocab, LooksUpTokensAndIds) {
  const Tokenizer& t = tiny();
  EXPECT_EQ(t.token_to_id("Ġw"), Ids::Gw);
  EXPECT_EQ(t.token_to_id("<|im_end|>"), Ids::im_end);
  EXPECT_EQ(t.token_to_id("nope"), -1);
  EXPECT_EQ(t.id_to_token(Ids::hello), "hello");
  EXPECT_EQ(t.id_to_token(' '), "Ġ");
  EXPECT_EQ(t.id_to_token(Ids::im_start), "<|im_start|>");
  EXPECT_EQ(t.vocab_size(), Ids::cafe + 1);
  EXPECT_THROW(t.id_to_token(Ids::cafe + 1), Error);
  EXPECT_THROW(t.id_to_token(-1), Error);
}

TEST(TokenizerLoad, AddedTokenIdsFollowTokenizers) {
  // tokenizers ignores the listed id: new contents are numbered on from the model vocabulary's size, and a
  // content that is already a model token keeps that token's id.
  json j = tiny_json();
  j["added_tokens"][0]["id"] = 999;
  j["added_tokens"].push_back({{"id", 5}, {"content", "hello"}, {"special", true}, {"normalized", false}});
  Tokenizer t = load_json(j, "ids");
  EXPECT_EQ(t.token_to_id("<|im_start|>"), Ids::im_start);
  EXPECT_EQ(t.token_to_id("hello"), Ids::hello);
  EXPECT_EQ(t.decode(t.encode("hello<|im_start|>"), /*skip_special_tokens=*/true), "");
}

TEST(TokenizerLoad, VocabAndMergesDirectoryGivesTheSameIds) {
  json j = tiny_json();
  fs::path d = temp_dir("vocab_merges");
  write(d / "vocab.json", j["model"]["vocab"].dump());
  std::string merges = "#version: 0.2\n";
  for (const auto& [a, b] : kMerges) merges += a + " " + b + "\r\n";
  write(d / "merges.txt", merges);
  json decoder = json::object();
  for (const json& t : j["added_tokens"]) {
    json x = t;
    x.erase("id");
    decoder[std::to_string(t["id"].get<int>())] = x;
  }
  write(d / "tokenizer_config.json", json({{"added_tokens_decoder", decoder}}).dump());
  Tokenizer t = Tokenizer::load(d.string());
  for (const char* s : {"hello world", "<|im_start|>user\nbell aaa<|im_end|>", "a  <mask>b 12", "caf" "e\xCC\x81" "!"})
    EXPECT_EQ(t.encode(s), tiny().encode(s)) << s;
}

TEST(TokenizerLoad, ErrorsNameTheFileAndTheField) {
  json wp = tiny_json();
  wp["model"]["type"] = "WordPiece";
  fs::path d = temp_dir("errors");
  fs::path f = write(d / "tokenizer.json", wp.dump());
  std::string msg = error_of([&] { Tokenizer::load(f.string()); });
  EXPECT_NE(msg.find(f.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.type is \"WordPiece\""), std::string::npos) << msg;

  json ws = tiny_json();
  ws["pre_tokenizer"] = {{"type", "Whitespace"}};
  write(f, ws.dump());
  msg = error_of([&] { Tokenizer::load(f.string()); });
  EXPECT_NE(msg.find("pre_tokenizer is \"Whitespace\""), std::string::npos) << msg;

  json lower = tiny_json();
  lower["normalizer"] = {{"type", "Lowercase"}};
  write(f, lower.dump());
  msg = error_of([&] { Tokenizer::load(f.string()); });
  EXPECT_NE(msg.find("normalizer.type is \"Lowercase\""), std::string::npos) << msg;

  json bad_merge = tiny_json();
  bad_merge["model"]["merges"].push_back(json::array({"q", "nope"}));
  write(f, bad_merge.dump());
  msg = error_of([&] { Tokenizer::load(f.string()); });
  EXPECT_NE(msg.find("\"nope\", which is not in the vocabulary"), std::string::npos) << msg;

  write(f, "{not json");
  msg = error_of([&] { Tokenizer::load(f.string()); });
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;

  msg = error_of([&] { Tokenizer::load((d / "missing").string()); });
  EXPECT_NE(msg.find("no such file or directory"), std::string::npos) << msg;
}

// `{"a": {"a": ... 1 ... }}`, `depth` objects deep. (Objects: copying a deep object overflowed the stack where an
// array of the same depth happened not to.)
std::string nested(int depth) {
  std::string s;
  for (int i = 0; i < depth; ++i) s += R"({"a":)";
  return s + "1" + std::string(size_t(depth), '}');
}

TEST(TokenizerLoad, RefusesDeepNestingBeforeBuildingTheDocument) {
  // 100k levels used to end in SIGSEGV (a recursive copy or dump of the value), even in a value never read.
  fs::path f = temp_dir("deep") / "tokenizer.json";
  for (const char* key : {"normalizer", "pre_tokenizer", "post_processor", "decoder"}) {
    json j = tiny_json();
    j[key] = "@DEEP@";
    std::string text = j.dump();
    size_t at = text.find("\"@DEEP@\"");
    text.replace(at, 8, nested(100000));
    write(f, text);
    std::string msg = error_of([&] { Tokenizer::load(f.string()); });
    EXPECT_NE(msg.find(f.string()), std::string::npos) << key << ": " << msg;
    EXPECT_NE(msg.find("nested deeper than 256 levels"), std::string::npos) << key << ": " << msg;
    // The root object is level 1: the 256th '{' of the run (5 bytes each) opens level 257.
    EXPECT_NE(msg.find(fmt::format("at byte {}", at + 255 * 5)), std::string::npos) << key << ": " << msg;
  }
  // An honest depth loads, and brackets inside strings do not count.
  json ok = tiny_json();
  ok["unused"] = json::parse(nested(200));
  ok["version"] = std::string(1000, '[') + "\"\\";
  EXPECT_EQ(load_json(ok, "deep_ok").encode("hello"), tiny().encode("hello"));
}

TEST(TokenizerLoad, EveryTypeErrorNamesTheFileAndTheField) {
  // Each used to surface as nlohmann's "[json.exception.type_error.302] type must be ..." with neither the file
  // nor the field, or was accepted silently (a 64-bit id truncated to 32 bits, a string flag read as false).
  struct Case {
    std::function<void(json&)> mutate;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {[](json& j) { j["model"]["vocab"]["h"] = "104"; }, R"(field 'model.vocab["h"]' must be an integer)"},
      {[](json& j) { j["model"]["vocab"]["h"] = (int64_t{1} << 32) + 104; }, R"(field 'model.vocab["h"]' must be)"},
      {[](json& j) { j["model"]["vocab"]["h"] = 104.5; }, R"(field 'model.vocab["h"]' must be an integer)"},
      {[](json& j) { j["model"]["dropout"] = "0.1"; }, "field 'model.dropout' must be a number, got a string"},
      {[](json& j) { j["model"]["type"] = 1; }, "field 'model.type' must be a string, got a number 1"},
      {[](json& j) { j["model"]["byte_fallback"] = "no"; }, "field 'model.byte_fallback' must be true or false"},
      {[](json& j) { j["model"]["ignore_merges"] = 1; }, "field 'model.ignore_merges' must be true or false"},
      {[](json& j) { j["model"]["fuse_unk"] = "false"; }, "field 'model.fuse_unk' must be true or false"},
      {[](json& j) { j["model"]["unk_token"] = 5; }, "field 'model.unk_token' must be a string"},
      {[](json& j) { j["model"]["end_of_word_suffix"] = 0; }, "field 'model.end_of_word_suffix' must be a string"},
      {[](json& j) { j["model"]["merges"] = "l l"; }, "field 'model.merges' must be an array, got a string"},
      {[](json& j) { j["model"]["merges"][0] = 5; }, "field 'model.merges[0]' must be \"A B\" or"},
      {[](json& j) { j["model"]["vocab"] = json::array(); }, "field 'model.vocab' must be an object, got an array"},
      {[](json& j) { j["normalizer"]["type"] = 3; }, "field 'normalizer.type' must be a string, got a number 3"},
      {[](json& j) { j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{"type", "NFC"}}}}; },
       "field 'normalizer.normalizers' must be an array"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][1]["use_regex"] = "no"; },
       "field 'pre_tokenizer.pretokenizers[1].use_regex' must be true or false"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = 0; },
       "field 'pre_tokenizer.pretokenizers[1].add_prefix_space' must be true or false"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = 1; },
       "field 'pre_tokenizer.pretokenizers[0].behavior' must be a string"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = 7; },
       "field 'pre_tokenizer.pretokenizers[0].pattern.Regex' must be a string"},
      {[](json& j) { j["pre_tokenizer"]["pretokenizers"] = "Split"; },
       "field 'pre_tokenizer.pretokenizers' must be an array"},
      {[](json& j) { j["post_processor"]["type"] = true; }, "field 'post_processor.type' must be a string"},
      {[](json& j) { j["added_tokens"] = json::object(); }, "field 'added_tokens' must be an array"},
      {[](json& j) { j["added_tokens"][0]["special"] = "yes"; },
       "field 'added_tokens[0].special' must be true or false, got a string \"yes\""},
      {[](json& j) { j["added_tokens"][1]["content"] = 7; }, "field 'added_tokens[1].content' must be a string"},
      {[](json& j) { j["added_tokens"][2]["id"] = 1.5; }, "field 'added_tokens[2].id' must be an integer"},
      {[](json& j) {
         j["added_tokens"][2]["normalized"] = nullptr;  // null is "not given": the default applies
         j["added_tokens"][3]["lstrip"] = 1;
       },
       "field 'added_tokens[3].lstrip' must be true or false"},
  };
  fs::path f = temp_dir("types") / "tokenizer.json";
  for (const Case& c : cases) {
    json j = tiny_json();
    c.mutate(j);
    write(f, j.dump());
    std::string msg = error_of([&] { Tokenizer::load(f.string()); });
    EXPECT_EQ(msg.rfind(f.string() + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(c.expected), std::string::npos) << "expected: " << c.expected << "\n     got: " << msg;
  }

  // The vocab.json + merges.txt layout reads through the same checks.
  fs::path d = temp_dir("types_legacy");
  json vocab = tiny_json()["model"]["vocab"];
  std::string merges;
  for (const auto& [a, b] : kMerges) merges += a + " " + b + "\n";
  write(d / "merges.txt", merges);
  vocab["e"] = "101";
  write(d / "vocab.json", vocab.dump());
  std::string msg = error_of([&] { Tokenizer::load(d.string()); });
  EXPECT_NE(msg.find((d / "vocab.json").string() + R"(: field '["e"]' must be an integer)"), std::string::npos) << msg;
  vocab["e"] = 101;
  write(d / "vocab.json", vocab.dump());
  write(d / "tokenizer_config.json", R"({"add_prefix_space": "true"})");
  msg = error_of([&] { Tokenizer::load(d.string()); });
  EXPECT_NE(msg.find("tokenizer_config.json: field 'add_prefix_space' must be true or false"), std::string::npos) << msg;
  write(d / "tokenizer_config.json", "{}");
  write(d / "added_tokens.json", R"({"<x>": "300"})");
  msg = error_of([&] { Tokenizer::load(d.string()); });
  EXPECT_NE(msg.find(R"(added_tokens.json: field '["<x>"]' must be an integer)"), std::string::npos) << msg;
}

TEST(TokenizerChatTemplate, MatchesOpenUniPromptForm) {
  EXPECT_EQ(apply_chat_template({{"user", "Generate an image: a cat"}}, true),
            "<|im_start|>user\nGenerate an image: a cat<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(apply_chat_template({{"system", "S"}, {"user", "U"}, {"assistant", "A"}}, false),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n");
  // The template's special tokens come out as single ids.
  const Tokenizer& t = tiny();
  std::vector<int32_t> ids = t.encode(apply_chat_template({{"user", "hello"}}, true));
  EXPECT_EQ(ids.front(), Ids::im_start);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), Ids::im_start), 2);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), Ids::im_end), 1);
}
