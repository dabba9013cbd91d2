// Byte-level BPE tokenizer (Qwen2 / GPT-2 family) that gives the same ids as Hugging Face `tokenizers` on the
// same tokenizer.json. Pipeline: split on added tokens -> NFC -> regex pre-split (ICU) -> byte-level map -> BPE.
// NFC uses Unicode 9.0 data, as tokenizers does. Known gap: the regex runs on ICU 72 (Unicode 15.0) while
// tokenizers' Oniguruma knows Unicode 16, so letters/digits assigned after 15.0 may split differently.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace iomm {

// A token matched verbatim in the raw text before any other step (e.g. <|im_start|>, <IMG_CONTEXT>).
// Flags follow `tokenizers`' AddedToken.
struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;      // skipped by decode(skip_special_tokens = true)
  bool lstrip = false;       // the match swallows whitespace on its left
  bool rstrip = false;       // ... and on its right
  bool single_word = false;  // matches only when not inside a word
  bool normalized = false;   // matched on the NFC-normalized text instead of the raw text
};

// GPT-2's bytes_to_unicode: every byte gets a printable code point (33..126, 161..172, 174..255 map to
// themselves; the other 68 bytes map, in order, to U+0100...). Vocabulary strings are written in this alphabet.
const std::array<char32_t, 256>& bytes_to_unicode();

class Tokenizer {
 public:
  // `path`: a tokenizer.json, a directory holding tokenizer.json, or a directory with vocab.json + merges.txt
  // (added tokens from tokenizer_config.json `added_tokens_decoder`, else added_tokens.json).
  // Throws iomm::Error naming the file and field for anything that is not a byte-level BPE tokenizer.
  static Tokenizer load(const std::string& path);

  // Ids for `text` (UTF-8). No BOS/EOS is added (Qwen2's post-processor adds none). Thread-safe.
  std::vector<int32_t> encode(std::string_view text) const;
  // Text for `ids`: byte-level decoding, invalid UTF-8 replaced by U+FFFD. Throws on an unknown id.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  // -1 when `token` (vocabulary form, e.g. "Ġworld", or an added token's content) is unknown.
  int32_t token_to_id(std::string_view token) const;
  // Vocabulary form of `id`; throws iomm::Error when there is none.
  const std::string& id_to_token(int32_t id) const;
  // Highest id + 1 over the model vocabulary and the added tokens.
  int32_t vocab_size() const;
  const std::vector<AddedToken>& added_tokens() const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;  // shared, immutable apart from the mutex-guarded BPE cache
};

// One chat turn for the Qwen2 (ChatML) template.
struct ChatMessage {
  std::string role, content;
};

// `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then `<|im_start|>assistant\n` when
// `add_generation_prompt`. No default system turn is inserted: this is the form OpenUni/IOMM feed InternVL3
// (`<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n`). Qwen2.5-Instruct's own template would
// prepend "You are Qwen, created by Alibaba Cloud..." and InternVL's chat() its InternVL system prompt; pass a
// {"system", ...} message first to get either.
std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt);

}  // namespace iomm
