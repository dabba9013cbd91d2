// The vocab.json + merges.txt layout, with the optional tokenizer_config.json and added_tokens.json: one input holds
// the four files, cut at "\n====\n" (a missing part means the file is absent).
#include "fuzz_util.h"
#include "text/tokenizer.h"

using namespace iomm;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  std::filesystem::create_directories(fuzz::scratch_path("vm"));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const char* files[] = {"vocab.json", "merges.txt", "tokenizer_config.json", "added_tokens.json"};
  const auto parts = fuzz::split(fuzz::as_text(data, size), "\n====\n", 4);
  const std::string dir = fuzz::scratch_path("vm");
  for (size_t i = 0; i < 4; ++i) {
    const std::string path = dir + "/" + files[i];
    if (i < parts.size())
      fuzz::write_file(path, parts[i]);
    else
      std::filesystem::remove(path);
  }
  fuzz::refusal_is_fine([&] {
    const Tokenizer t = Tokenizer::load(dir);
    for (const char* text : {"a red circle", " hello  world\u00e9 42", "\xc3\x28"}) (void)t.decode(t.encode(text));
  });
  return 0;
}
