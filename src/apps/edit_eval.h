// The zero-shot editing score (`iomm eval edit`, and step 5b of `iomm demo`): does a generator that never trained
// on edits keep a reference scene and apply an instruction to it?
//
// Each case is a held-out prompt's ground-truth scene (world::ground_truth_scene) and a recolouring instruction,
// "make the shapes <colour>", with a colour none of its objects has. The model gets the instruction and the
// reference image, unmasked (ConditionKind::edit, as `iomm generate --edit`). The edited image is read by
// ShapesEval's detector (world/detect.h), and scored by colour and place only, not shape class: the tiny world's
// generators do not draw crisp shapes yet (docs/tiny-world.md), and a recolouring keeps the shapes anyway.
//   kept    = the fraction of the reference's objects with a detection in the edited image whose centre lies within
//             max(3, size / 2) px of the object's centre (greedy, nearest first, each detection used once)
//   applied = the fraction of those matched detections drawn in the target colour
//   score   = kept · applied per case, averaged
// A copy of the reference scores 0 (kept 1, applied 0), an image in the target colour that ignores the reference
// scores its chance overlap, the ideal edit 1. The same instruction without the reference image (a text
// condition) is generated and scored too: the control says what the instruction alone draws by chance.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/iomm_model.h"
#include "world/prompts.h"
#include "world/scene.h"

namespace iomm {

struct EditCase {
  world::Scene reference;
  world::Color target = world::Color::red;
  std::string instruction;
};

// `n` cases over the held-out prompts (cycled), scenes drawn as world::render_prompts draws sample k of prompt i
// (seed `seed`), each with a target colour its objects do not have (drawn from `seed`).
std::vector<EditCase> make_edit_cases(const std::vector<world::PromptSpec>& prompts, int64_t n, uint64_t seed,
                                      int size);

struct EditMatch {
  double kept = 0, applied = 0;
  double score() const { return kept * applied; }
};
EditMatch score_edit(const world::Scene& reference, world::Color target, const world::Raster& edited);

struct EditScore {
  int64_t cases = 0;
  double kept = 0, applied = 0, score = 0;                          // the edits
  double control_kept = 0, control_applied = 0, control_score = 0;  // the instruction alone (no reference image)
  nlohmann::ordered_json to_json() const;
};

struct EditEvalOptions {
  int64_t cases = 64;
  int64_t batch = 64;        // images per generate() call
  GenerateOptions generate;  // steps, CFG, seed of the noise
  uint64_t scene_seed = 0;
  bool progress = true;
};

// Generates the edits and the controls, writes OUT/edits.png (reference | edit | control, 8 cases per row),
// OUT/edit.json (the score and one record per case) and returns the score.
EditScore run_edit_eval(IommModel& model, const std::vector<world::PromptSpec>& prompts, const std::string& out,
                        const EditEvalOptions& o);

}  // namespace iomm
