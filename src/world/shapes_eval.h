// ShapesEval: GenEval's scoring on the tiny world. Reads GenEval's output layout
//   DIR/<00000>/metadata.jsonl   (the prompt's JSON line)
//   DIR/<00000>/samples/<0000>.png
// detects objects (world/detect.h) and judges each image with GenEval's rules (evaluate_images.py):
//  - include clauses AND together: the `count` most confident objects of the class must exist (more are
//    fine unless excluded); with `color`, all of those must have that colour; with `position: [rel, i]`,
//    each of them must stand in `rel` to every object matched by include[i] (GenEval's relative_position on
//    bboxes, POSITION_THRESHOLD 0.1);
//  - exclude clauses OR together: `count` or more objects of the class fail the image.
// Scores: per category (tag) the fraction of correct images; overall = the mean over categories.
#pragma once
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "world/detect.h"
#include "world/prompts.h"

namespace iomm::world {

struct Verdict {
  bool correct = false;
  std::string reason;  // empty when correct; GenEval's wording otherwise
};
Verdict judge(const PromptSpec& p, const std::vector<Detection>& detections);
// judge() on a read scene; an unreadable one (too much stray colour or off-level grey) fails, saying so.
Verdict judge(const PromptSpec& p, const SceneReading& scene, const DetectorParams& params = {});

struct ImageRecord {
  std::string file;  // relative to the evaluated folder
  int prompt_index = 0;
  std::string tag, prompt;
  Verdict verdict;
  std::vector<Detection> detections;
  double stray = 0;  // SceneReading::stray
};

struct CategoryScore {
  int correct = 0, total = 0;
  double score() const { return total ? double(correct) / total : 0.0; }
};

struct EvalResult {
  std::vector<ImageRecord> images;
  std::map<std::string, CategoryScore> categories;
  double overall = 0;          // mean over the categories present
  double correct_prompts = 0;  // fraction of prompts with at least one correct image (GenEval's summary)
  nlohmann::ordered_json to_json() const;
};

// Fails naming `where` and the field when a prompt asks for what ShapesEval cannot judge: a tag outside its six
// categories, an empty include, a class or colour its detector does not know.
void check_judgeable(const PromptSpec& p, const std::string& where);

// Scores records (fills categories, overall, correct_prompts).
void summarize(EvalResult& r);
EvalResult evaluate_folder(const std::string& dir, const DetectorParams& params = {});
// One tile per image, in record order, framed green (correct) or red (wrong).
void write_grid(const EvalResult& r, const std::string& dir, const std::string& png_path);

}  // namespace iomm::world
