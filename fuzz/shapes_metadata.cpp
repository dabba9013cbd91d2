// GenEval / ShapesEval metadata.jsonl as `iomm eval shapes` (and `iomm world render`) read it: every line parsed and
// validated, the first one checked for what ShapesEval can judge, written back in GenEval's form, and laid out as
// the renderer would draw it.
#include "fuzz_util.h"
#include "world/prompts.h"
#include "world/shapes_eval.h"

using namespace iomm;
using namespace iomm::world;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::refusal_is_fine([&] {
    const auto prompts = parse_prompt_lines(std::string(fuzz::as_text(data, size)), "fuzz/00000/metadata.jsonl");
    for (const auto& entry : prompts) {
      const PromptSpec& p = entry.second;
      (void)to_json(p).dump();
      fuzz::refusal_is_fine([&] {
        check_judgeable(p, "fuzz/00000/metadata.jsonl");
        Rng rng{uint64_t(entry.first)};
        (void)layout(slots_for_prompt(p, rng), 32, rng);
      });
    }
  });
  return 0;
}
