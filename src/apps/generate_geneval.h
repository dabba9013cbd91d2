// Generation for evaluation: one prompt file in GenEval's metadata.jsonl form in, GenEval's output layout out
//   OUT/<00000>/metadata.jsonl   the prompt's JSON line, verbatim
//   OUT/<00000>/samples/<0000>.png
// so that `iomm eval shapes` (or GenEval itself) scores it. Image k of prompt i uses seed + i·1000 + k, so the
// result does not depend on the batch size. Each PNG records its prompt, seed and sampling parameters
// (apps/generation_record.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/iomm_model.h"
#include "world/prompts.h"

namespace iomm {

struct GenevalOptions {
  int64_t per_prompt = 4;
  int64_t batch = 16;  // images per generate() call
  GenerateOptions generate;
  bool progress = true;
  std::string model_fingerprint;  // into each PNG's record (apps/generation_record.h); empty when unknown
};

// Returns the number of images written.
int64_t generate_geneval(IommModel& model, const std::vector<world::PromptSpec>& prompts, const std::string& out,
                         const GenevalOptions& o);

}  // namespace iomm
