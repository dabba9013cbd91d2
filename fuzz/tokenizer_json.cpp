// A Hugging Face tokenizer.json (model.vocab / merges, added_tokens, normalizer, pre_tokenizer, post_processor,
// decoder); a loaded tokenizer then encodes and decodes fixed texts, so that vocabularies the loader accepts are
// used as the product uses them.
#include "fuzz_util.h"
#include "text/tokenizer.h"

using namespace iomm;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch_path("tokenizer.json");
  fuzz::write_file(path, fuzz::as_text(data, size));
  fuzz::refusal_is_fine([&] {
    const Tokenizer t = Tokenizer::load(path);
    for (const char* text : {"a red circle left of a blue square", "<|im_start|>user\n  x\u00e9\u4e2d 12 \xf0\x9f\x99\x82",
                             "\xff\xfe invalid", ""}) {
      const auto ids = t.encode(text);
      (void)t.decode(ids, true);
    }
    for (int32_t id = 0; id < std::min(t.vocab_size(), 64); ++id)
      fuzz::refusal_is_fine([&] { (void)t.token_to_id(t.id_to_token(id)); });  // a gap in the ids is refused
  });
  return 0;
}
