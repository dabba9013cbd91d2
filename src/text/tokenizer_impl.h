// Tokenizer internals shared by tokenizer.cpp (normalisation, pre-tokenisation, BPE, decoding) and
// tokenizer_files.cpp (reading tokenizer.json and the vocab.json + merges.txt layout): private to src/text.
#pragma once
#include <unicode/regex.h>

#include <array>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/tokenizer.h"

namespace iomm {
namespace tokenizer_detail {

// Qwen2's pre-tokenizer pattern (transformers' Qwen2Tokenizer), used for the vocab.json + merges.txt layout.
inline constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// GPT-2's pattern: what a ByteLevel pre-tokenizer with use_regex = true splits with.
inline constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// The BPE cache follows `tokenizers`: at most 10,000 pieces, each shorter than 256 bytes.
inline constexpr size_t kCacheCapacity = 10000;
inline constexpr size_t kCacheMaxPieceBytes = 256;
// Ids index dense tables; real vocabularies stay far below this.
inline constexpr int64_t kMaxId = int64_t{1} << 24;

// Byte trie over added-token contents for leftmost-longest matching (tokenizers uses Aho-Corasick with
// MatchKind::LeftmostLongest; the added vocabulary is small, so a trie walk per position is enough).
class AddedTrie {
 public:
  void insert(std::string_view s, int32_t token) {
    int32_t n = 0;
    for (unsigned char b : s) {
      int32_t child = find_child(n, b);
      if (child < 0) {
        child = static_cast<int32_t>(nodes_.size());
        nodes_.emplace_back();
        nodes_[n].kids.emplace_back(b, child);
      }
      n = child;
    }
    nodes_[n].token = token;
    first_[static_cast<unsigned char>(s[0])] = true;
  }
  bool empty() const { return nodes_.size() == 1; }
  // Longest token starting at `pos`: {token, end}, token -1 when none.
  std::pair<int32_t, size_t> longest_at(std::string_view s, size_t pos) const {
    std::pair<int32_t, size_t> best{-1, pos};
    if (!first_[static_cast<unsigned char>(s[pos])]) return best;
    int32_t n = 0;
    for (size_t i = pos; i < s.size(); ++i) {
      n = find_child(n, static_cast<unsigned char>(s[i]));
      if (n < 0) break;
      if (nodes_[n].token >= 0) best = {nodes_[n].token, i + 1};
    }
    return best;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> kids;
    int32_t token = -1;
  };
  int32_t find_child(int32_t n, unsigned char b) const {
    for (const auto& [k, c] : nodes_[n].kids)
      if (k == b) return c;
    return -1;
  }
  std::vector<Node> nodes_{1};
  std::array<bool, 256> first_{};
};

// A piece of the input: plain text (token -1) or an added token (index into Impl::added).
struct Segment {
  size_t begin, end;
  int32_t token;
};

struct MergeRule {
  int32_t rank, new_id;
};

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// Compiles an ICU pattern with `flags`; fails naming `where` (the file and field it came from).
std::unique_ptr<icu::RegexPattern> compile(const std::string& pattern, uint32_t flags, const std::string& where);

}  // namespace tokenizer_detail

struct Tokenizer::Impl {
  std::string source;                                // file named in error messages
  std::unordered_map<std::string, int32_t> vocab;    // model vocabulary, byte-level form
  std::unordered_map<std::string, int32_t> byte_vocab;  // raw bytes -> id; only for ignore_merges
  std::array<int32_t, 256> byte_id{};                // id of each single-byte symbol, -1 when absent
  std::unordered_map<uint64_t, tokenizer_detail::MergeRule> merges;    // (left id, right id) -> rank, merged id
  bool ignore_merges = false;
  int32_t unk_id = -1;
  bool fuse_unk = false;

  bool nfc = false;
  std::vector<std::unique_ptr<icu::RegexPattern>> splits;  // Split pre-tokenizers, in order
  bool add_prefix_space = false;                           // ByteLevel's options
  std::unique_ptr<icu::RegexPattern> byte_level_regex;     // set when ByteLevel use_regex = true

  std::vector<AddedToken> added;
  tokenizer_detail::AddedTrie raw_trie, normalized_trie;

  std::vector<std::string> tokens;         // vocabulary form by id ("" when the id is unused)
  std::vector<std::string> decoded_bytes;  // what the ByteLevel decoder makes of each id
  std::vector<uint8_t> known, special;     // per id

  mutable std::shared_mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  std::vector<tokenizer_detail::Segment> find_added(std::string_view s, const tokenizer_detail::AddedTrie& trie) const;
  void pre_tokenize(std::string_view text, std::vector<std::string>& pieces) const;
  void bpe(const std::string& piece, std::vector<int32_t>& out) const;
  std::vector<int32_t> merge_word(std::string_view piece) const;
  void finish();  // builds the id tables, tries and byte symbol ids
};

}  // namespace iomm
