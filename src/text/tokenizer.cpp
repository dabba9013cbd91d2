#include "text/tokenizer.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/uchar.h>
#include <unicode/uniset.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

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

namespace iomm {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Qwen2's pre-tokenizer pattern (transformers' Qwen2Tokenizer), used for the vocab.json + merges.txt layout.
constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// GPT-2's pattern: what a ByteLevel pre-tokenizer with use_regex = true splits with.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// The BPE cache follows `tokenizers`: at most 10,000 pieces, each shorter than 256 bytes.
constexpr size_t kCacheCapacity = 10000;
constexpr size_t kCacheMaxPieceBytes = 256;
// Ids index dense tables; real vocabularies stay far below this.
constexpr int64_t kMaxId = int64_t{1} << 24;

// ---- UTF-8 helpers (ICU's macros do the decoding) ----

char32_t next_cp(std::string_view s, size_t& i) {
  UChar32 c;
  int32_t k = static_cast<int32_t>(i);
  U8_NEXT(s.data(), k, static_cast<int32_t>(s.size()), c);
  i = static_cast<size_t>(k);
  return static_cast<char32_t>(c);
}

char32_t prev_cp(std::string_view s, size_t& i) {
  UChar32 c;
  int32_t k = static_cast<int32_t>(i);
  U8_PREV(s.data(), 0, k, c);
  i = static_cast<size_t>(k);
  return static_cast<char32_t>(c);
}

void append_utf8(std::string& out, char32_t c) {
  char buf[4];
  int32_t n = 0;
  UBool err = false;
  U8_APPEND(buf, n, 4, c, err);  // c is always a valid scalar value here
  (void)err;
  out.append(buf, static_cast<size_t>(n));
}

// Returns the byte offset of the first invalid UTF-8 sequence, or npos.
size_t invalid_utf8_at(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t at = i;
    UChar32 c;
    int32_t k = static_cast<int32_t>(i);
    U8_NEXT(s.data(), k, static_cast<int32_t>(s.size()), c);
    if (c < 0) return at;
    i = static_cast<size_t>(k);
  }
  return std::string_view::npos;
}

// Invalid sequences become U+FFFD, one per maximal subpart (what Rust's from_utf8_lossy does).
std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  int32_t i = 0, n = static_cast<int32_t>(s.size());
  while (i < n) {
    UChar32 c;
    U8_NEXT_OR_FFFD(s.data(), i, n, c);
    append_utf8(out, static_cast<char32_t>(c));
  }
  return out;
}

// Rust regex's Unicode `\w`, which tokenizers' single_word check uses.
bool is_word_char(char32_t c) {
  int8_t t = u_charType(static_cast<UChar32>(c));
  return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_ALPHABETIC) || t == U_NON_SPACING_MARK ||
         t == U_ENCLOSING_MARK || t == U_COMBINING_SPACING_MARK || t == U_DECIMAL_DIGIT_NUMBER ||
         t == U_CONNECTOR_PUNCTUATION || u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_JOIN_CONTROL);
}

bool is_space(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }

icu::UnicodeString to_icu(std::string_view s) {
  return icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
}

// NFC as Hugging Face `tokenizers` does it: its normalizer (the unicode-normalization-alignments crate) has
// Unicode 9.0 tables, so characters assigned later are left alone (no decomposition, combining class 0: they
// stop canonical reordering). ICU's NFC filtered to the characters of Unicode <= 9.0 behaves the same; plain
// ICU NFC (Unicode 15) would, e.g., move U+032E after a Gunjala Gondi virama (Unicode 11) where tokenizers does not.
const icu::Normalizer2& nfc_normalizer() {
  static const icu::Normalizer2* filtered = [] {
    UErrorCode st = U_ZERO_ERROR;
    const icu::Normalizer2* base = icu::Normalizer2::getNFCInstance(st);
    if (U_FAILURE(st))
      fail("ICU: cannot load the NFC normalizer data ({}); is libicu's data library installed?", u_errorName(st));
    auto* unicode9 = new icu::UnicodeSet(UNICODE_STRING_SIMPLE("[:age=9.0:]"), st);  // lives for the process
    if (U_FAILURE(st)) fail("ICU: cannot build the Unicode 9.0 character set: {}", u_errorName(st));
    unicode9->freeze();
    return new icu::FilteredNormalizer2(*base, *unicode9);
  }();
  return *filtered;
}

std::string nfc(std::string_view s) {
  const icu::Normalizer2& n = nfc_normalizer();
  UErrorCode st = U_ZERO_ERROR;
  icu::StringPiece sp(s.data(), static_cast<int32_t>(s.size()));
  if (n.isNormalizedUTF8(sp, st) && U_SUCCESS(st)) return std::string(s);
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(s.size()));
  st = U_ZERO_ERROR;
  n.normalizeUTF8(0, sp, sink, nullptr, st);
  if (U_FAILURE(st)) fail("ICU NFC normalization failed: {}", u_errorName(st));
  return out;
}

std::unique_ptr<icu::RegexPattern> compile(const std::string& pattern, uint32_t flags, const std::string& where) {
  UErrorCode st = U_ZERO_ERROR;
  UParseError pe{};
  std::unique_ptr<icu::RegexPattern> p(icu::RegexPattern::compile(to_icu(pattern), flags, pe, st));
  if (U_FAILURE(st))
    fail("{}: the pre-tokenizer regex does not compile with ICU ({} at offset {}); pattern: {}", where,
         u_errorName(st), pe.offset, pattern);
  return p;
}

// Isolated split: every regex match is a piece, and so is every gap between matches. Empty pieces are dropped.
void regex_split(const icu::RegexPattern& pattern, std::string_view text, std::vector<std::string>& out) {
  if (text.empty()) return;
  icu::UnicodeString u = to_icu(text);
  UErrorCode st = U_ZERO_ERROR;
  std::unique_ptr<icu::RegexMatcher> m(pattern.matcher(u, st));
  if (U_FAILURE(st)) fail("ICU: cannot create a regex matcher: {}", u_errorName(st));
  m->setStackLimit(0, st);  // ICU's default 8 MB backtrack stack overflows on very long runs (1M spaces)
  auto emit = [&](int32_t b, int32_t e) {
    if (b >= e) return;
    std::string piece;
    u.tempSubStringBetween(b, e).toUTF8String(piece);
    out.push_back(std::move(piece));
  };
  int32_t prev = 0;
  while (m->find(st) && U_SUCCESS(st)) {
    int32_t b = m->start(st), e = m->end(st);
    emit(prev, b);
    emit(b, e);
    prev = e;
  }
  if (U_FAILURE(st)) fail("ICU regex matching failed: {}", u_errorName(st));
  emit(prev, u.length());
}

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

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

}  // namespace

const std::array<char32_t, 256>& bytes_to_unicode() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

struct Tokenizer::Impl {
  std::string source;                                // file named in error messages
  std::unordered_map<std::string, int32_t> vocab;    // model vocabulary, byte-level form
  std::unordered_map<std::string, int32_t> byte_vocab;  // raw bytes -> id; only for ignore_merges
  std::array<int32_t, 256> byte_id{};                // id of each single-byte symbol, -1 when absent
  std::unordered_map<uint64_t, MergeRule> merges;    // (left id, right id) -> rank, merged id
  bool ignore_merges = false;
  int32_t unk_id = -1;
  bool fuse_unk = false;

  bool nfc = false;
  std::vector<std::unique_ptr<icu::RegexPattern>> splits;  // Split pre-tokenizers, in order
  bool add_prefix_space = false;                           // ByteLevel's options
  std::unique_ptr<icu::RegexPattern> byte_level_regex;     // set when ByteLevel use_regex = true

  std::vector<AddedToken> added;
  AddedTrie raw_trie, normalized_trie;

  std::vector<std::string> tokens;         // vocabulary form by id ("" when the id is unused)
  std::vector<std::string> decoded_bytes;  // what the ByteLevel decoder makes of each id
  std::vector<uint8_t> known, special;     // per id

  mutable std::shared_mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  std::vector<Segment> find_added(std::string_view s, const AddedTrie& trie) const;
  void pre_tokenize(std::string_view text, std::vector<std::string>& pieces) const;
  void bpe(const std::string& piece, std::vector<int32_t>& out) const;
  std::vector<int32_t> merge_word(std::string_view piece) const;
  void finish();  // builds the id tables, tries and byte symbol ids
};

// Mirrors tokenizers' AddedVocabulary::find_matches, flags included.
std::vector<Segment> Tokenizer::Impl::find_added(std::string_view s, const AddedTrie& trie) const {
  std::vector<Segment> out;
  if (s.empty()) return out;
  if (trie.empty()) return {{0, s.size(), -1}};
  size_t start_offset = 0;
  size_t pos = 0;
  while (pos < s.size()) {
    auto [tok, stop] = trie.longest_at(s, pos);
    if (tok < 0) {
      ++pos;
      continue;
    }
    size_t start = pos;
    pos = stop;  // the next match is searched after this one, even when this one is discarded
    const AddedToken& t = added[tok];
    if (t.single_word) {
      size_t i = start, j = stop;
      bool start_ok = start == 0 || !is_word_char(prev_cp(s, i));
      bool stop_ok = stop == s.size() || !is_word_char(next_cp(s, j));
      if (!start_ok || !stop_ok) continue;
    }
    if (t.lstrip) {
      size_t i = start;
      while (i > 0) {
        size_t k = i;
        if (!is_space(prev_cp(s, k))) break;
        i = k;
      }
      start = std::max(i, start_offset);  // whitespace an earlier match took stays with it
    }
    if (t.rstrip) {
      while (stop < s.size()) {
        size_t k = stop;
        if (!is_space(next_cp(s, k))) break;
        stop = k;
      }
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, tok});
    start_offset = stop;
  }
  if (start_offset < s.size()) out.push_back({start_offset, s.size(), -1});
  return out;
}

void Tokenizer::Impl::pre_tokenize(std::string_view text, std::vector<std::string>& pieces) const {
  pieces.clear();
  if (text.empty()) return;
  pieces.emplace_back(text);
  std::vector<std::string> next;
  for (const auto& pattern : splits) {
    next.clear();
    for (const std::string& p : pieces) regex_split(*pattern, p, next);
    pieces.swap(next);
  }
  if (add_prefix_space)
    for (std::string& p : pieces)
      if (p[0] != ' ') p.insert(0, 1, ' ');
  if (byte_level_regex) {
    next.clear();
    for (const std::string& p : pieces) regex_split(*byte_level_regex, p, next);
    pieces.swap(next);
  }
}

// tokenizers' Word::merge_all: a heap of candidate merges ordered by (rank, position); a popped candidate is
// applied only if the pair at that position still produces the same token.
std::vector<int32_t> Tokenizer::Impl::merge_word(std::string_view piece) const {
  struct Sym {
    int32_t id, prev, next;
    uint32_t len;  // bytes covered; 0 once merged into its left neighbour
  };
  std::vector<Sym> syms;
  syms.reserve(piece.size());
  auto add = [&](int32_t id, uint32_t len) {
    int32_t n = static_cast<int32_t>(syms.size());
    if (n > 0) syms.back().next = n;
    syms.push_back({id, n - 1, -1, len});
  };
  // A byte missing from the vocabulary becomes unk (fused if asked) or is dropped, as in tokenizers.
  int32_t pending_unk_len = 0;
  for (unsigned char b : piece) {
    int32_t id = byte_id[b];
    if (id >= 0) {
      if (pending_unk_len) add(unk_id, static_cast<uint32_t>(pending_unk_len));
      pending_unk_len = 0;
      add(id, 1);
    } else if (unk_id >= 0) {
      if (pending_unk_len && !fuse_unk) {
        add(unk_id, static_cast<uint32_t>(pending_unk_len));
        pending_unk_len = 0;
      }
      ++pending_unk_len;
    }
  }
  if (pending_unk_len) add(unk_id, static_cast<uint32_t>(pending_unk_len));

  struct Cand {
    int32_t rank, pos, new_id;
  };
  auto later = [](const Cand& a, const Cand& b) { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; };
  std::priority_queue<Cand, std::vector<Cand>, decltype(later)> queue(later);
  auto rule = [&](int32_t a, int32_t b) -> const MergeRule* {
    auto it = merges.find(pair_key(a, b));
    return it == merges.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < syms.size(); ++i)
    if (const MergeRule* r = rule(syms[i].id, syms[i + 1].id))
      queue.push({r->rank, static_cast<int32_t>(i), r->new_id});

  while (!queue.empty()) {
    Cand top = queue.top();
    queue.pop();
    Sym& cur = syms[top.pos];
    if (cur.len == 0 || cur.next == -1) continue;
    Sym right = syms[cur.next];
    const MergeRule* r = rule(cur.id, right.id);
    if (!r || r->new_id != top.new_id) continue;  // stale candidate
    int32_t right_pos = cur.next;
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    syms[right_pos].len = 0;
    if (right.next >= 0) syms[right.next].prev = top.pos;
    if (cur.prev >= 0)
      if (const MergeRule* pr = rule(syms[cur.prev].id, cur.id)) queue.push({pr->rank, cur.prev, pr->new_id});
    if (cur.next >= 0)
      if (const MergeRule* nr = rule(cur.id, syms[cur.next].id)) queue.push({nr->rank, top.pos, nr->new_id});
  }
  std::vector<int32_t> ids;
  for (const Sym& s : syms)
    if (s.len) ids.push_back(s.id);
  return ids;
}

void Tokenizer::Impl::bpe(const std::string& piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (ignore_merges) {  // a piece that is itself a token is emitted whole
    auto it = byte_vocab.find(piece);
    if (it != byte_vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  {
    std::shared_lock lock(cache_mutex);
    auto it = cache.find(piece);
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids = merge_word(piece);
  out.insert(out.end(), ids.begin(), ids.end());
  if (piece.size() < kCacheMaxPieceBytes) {
    std::unique_lock lock(cache_mutex);
    if (cache.size() < kCacheCapacity) cache.emplace(piece, std::move(ids));
  }
}

void Tokenizer::Impl::finish() {
  // Inverse of bytes_to_unicode, for decoding and for the raw-bytes vocabulary.
  std::array<int16_t, 512> char_byte;  // bytes_to_unicode's values are all below U+0200
  char_byte.fill(-1);
  for (int b = 0; b < 256; ++b) char_byte[bytes_to_unicode()[b]] = static_cast<int16_t>(b);
  // The ByteLevel decoder maps every char of a token back to its byte; a token with any other char is
  // emitted as its own UTF-8.
  auto byte_decode = [&](const std::string& token, std::string& out) -> bool {
    out.clear();
    size_t i = 0;
    while (i < token.size()) {
      char32_t c = next_cp(token, i);
      if (c >= char_byte.size() || char_byte[c] < 0) {
        out = token;
        return false;
      }
      out.push_back(static_cast<char>(char_byte[c]));
    }
    return true;
  };

  int32_t size = 0;
  for (const auto& [tok, id] : vocab) size = std::max(size, id + 1);
  for (const AddedToken& t : added) size = std::max(size, t.id + 1);
  tokens.assign(size, {});
  decoded_bytes.assign(size, {});
  known.assign(size, 0);
  special.assign(size, 0);
  std::string bytes;
  for (const auto& [tok, id] : vocab) {
    tokens[id] = tok;
    known[id] = 1;
    bool mapped = byte_decode(tok, bytes);
    decoded_bytes[id] = bytes;
    if (ignore_merges && mapped) byte_vocab.emplace(bytes, id);
  }
  // tokenizers decodes a normalized added token from its normalized form, and skips (skip_special_tokens) any
  // id whose decode form is the content of a special added token.
  std::unordered_set<std::string> special_contents;
  std::unordered_map<int32_t, std::string> added_form;
  for (size_t k = 0; k < added.size(); ++k) {
    const AddedToken& t = added[k];
    std::string form = t.normalized && nfc ? iomm::nfc(t.content) : t.content;
    tokens[t.id] = t.content;
    known[t.id] = 1;
    byte_decode(form, bytes);
    decoded_bytes[t.id] = bytes;
    if (t.special) special_contents.insert(t.content);
    if (t.normalized)
      normalized_trie.insert(form, static_cast<int32_t>(k));
    else
      raw_trie.insert(t.content, static_cast<int32_t>(k));
    added_form[t.id] = std::move(form);
  }
  for (int32_t id = 0; id < size; ++id) {
    if (!known[id]) continue;
    auto it = added_form.find(id);
    special[id] = special_contents.count(it == added_form.end() ? tokens[id] : it->second) ? 1 : 0;
  }
  for (int b = 0; b < 256; ++b) {
    std::string s;
    append_utf8(s, bytes_to_unicode()[b]);
    auto it = vocab.find(s);
    byte_id[b] = it == vocab.end() ? -1 : it->second;
  }
}

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

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  const Impl& m = *impl_;
  if (text.size() > static_cast<size_t>(INT32_MAX))  // ICU strings and offsets are 32-bit
    fail("tokenizer: the input text has {} bytes; split it into pieces below 2 GiB", text.size());
  size_t bad = invalid_utf8_at(text);
  if (bad != std::string_view::npos)
    fail("tokenizer: the input text is not valid UTF-8 (byte {} of {}); re-encode the text as UTF-8", bad,
         text.size());
  std::vector<int32_t> ids;
  std::vector<std::string> pieces;
  // 1. added tokens matched on the raw text; 2. NFC per remaining segment, then added tokens matched on the
  // normalized text; 3. pre-tokenize and BPE the rest (tokenizers' AddedVocabulary::extract_and_normalize).
  for (const Segment& a : m.find_added(text, m.raw_trie)) {
    if (a.token >= 0) {
      ids.push_back(m.added[a.token].id);
      continue;
    }
    std::string seg(text.substr(a.begin, a.end - a.begin));
    if (m.nfc) seg = nfc(seg);
    for (const Segment& b : m.find_added(seg, m.normalized_trie)) {
      if (b.token >= 0) {
        ids.push_back(m.added[b.token].id);
        continue;
      }
      m.pre_tokenize(std::string_view(seg).substr(b.begin, b.end - b.begin), pieces);
      for (const std::string& piece : pieces) m.bpe(piece, ids);
    }
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || id >= static_cast<int32_t>(m.known.size()) || !m.known[id])
      fail("tokenizer {}: cannot decode id {}: it is not in the vocabulary (size {})", m.source, id, vocab_size());
    if (skip_special_tokens && m.special[id]) continue;
    bytes += m.decoded_bytes[id];
  }
  return utf8_lossy(bytes);
}

int32_t Tokenizer::token_to_id(std::string_view token) const {
  const Impl& m = *impl_;
  for (const AddedToken& t : m.added)
    if (t.content == token) return t.id;
  auto it = m.vocab.find(std::string(token));
  return it == m.vocab.end() ? -1 : it->second;
}

const std::string& Tokenizer::id_to_token(int32_t id) const {
  const Impl& m = *impl_;
  if (id < 0 || id >= static_cast<int32_t>(m.known.size()) || !m.known[id])
    fail("tokenizer {}: id {} is not in the vocabulary (size {})", m.source, id, vocab_size());
  return m.tokens[id];
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->tokens.size()); }

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }

std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string out;
  for (const ChatMessage& msg : messages) out += "<|im_start|>" + msg.role + "\n" + msg.content + "<|im_end|>\n";
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

}  // namespace iomm
