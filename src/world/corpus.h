// `iomm world make` and `iomm world render`: the tiny world's corpus on disk, and ground-truth images for
// prompt files in GenEval's layout.
//
// Corpus layout (DIR):
//   image/shard-000000.tar ...     image-only pool: <key>.png only (no caption, no scene)
//   image/index.jsonl              {"shard", "key"} per sample
//   captioned/shard-000000.tar ... captioned pool: <key>.png, <key>.txt (caption), <key>.json (scene + spec)
//   captioned/index.jsonl          {"shard", "key", "tag", "caption"} per sample
//   prompts/eval.jsonl, prompts/eval-small.jsonl   held-out prompts, GenEval metadata form
//   world.json                     what made it: seed, size, counts, vocabulary, held-out pairs
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"
#include "world/prompts.h"
#include "world/scene.h"

namespace iomm::world {

struct CorpusOptions {
  std::string out;
  uint64_t seed = 0;
  int size = 32;
  int64_t image_only = 10000;
  int64_t captioned = 1000;
  int64_t shard_size = 1000;
  bool progress = true;
};

struct CorpusReport {
  int64_t images = 0, captioned = 0;
  double seconds = 0;
};

CorpusReport make_corpus(const CorpusOptions& o);

// Ground truth for each prompt: K images at OUT/<00000>/samples/<0000>.png plus OUT/<00000>/metadata.jsonl.
void render_prompts(const std::vector<PromptSpec>& prompts, const std::string& out, int per_prompt, uint64_t seed,
                    int size, bool progress = true);
// The scene of ground-truth sample k of prompt i (what render_prompts draws).
Scene ground_truth_scene(const PromptSpec& p, size_t prompt_index, int k, uint64_t seed, int size);

Image to_image(const Raster& r);
// RGB view of any decoded image (gray replicated, alpha dropped as GenEval's convert("RGB") does).
Raster to_raster(const Image& img);

}  // namespace iomm::world
