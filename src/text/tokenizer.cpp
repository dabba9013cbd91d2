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
#include "text/tokenizer_impl.h"

namespace iomm {
namespace tokenizer_detail {

namespace fs = std::filesystem;
using json = nlohmann::json;


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

}  // namespace tokenizer_detail

using namespace tokenizer_detail;

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
