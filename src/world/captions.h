// The training side of the tiny world: the caption grammar and the two sample pools.
//
// Captions cover GenEval's six categories with several phrasings each. Held out from every caption (tested):
//  - every prompt string of the built-in evaluation sets (GenEval's "a photo of ..." forms of single_object,
//    two_object, counting, colors and position prompts never occur verbatim; other phrasings do);
//  - the held-out colour pairs (heldout_color_pairs()): no captioned image shows such a pair, so the
//    color_attr evaluation asks for combinations never seen with a caption.
#pragma once
#include <cstdint>
#include <string>

#include "world/prompts.h"
#include "world/scene.h"

namespace iomm::world {

struct CaptionedSample {
  PromptSpec spec;  // what the caption asserts, in GenEval form (spec.prompt is the caption)
  Scene scene;
};

// Sample `index` of the captioned pool for corpus seed `seed`; independent of every other index.
CaptionedSample make_captioned(uint64_t seed, uint64_t index, int size);
// Sample `index` of the image-only pool: 1-4 random objects, no caption.
Scene make_unlabeled(uint64_t seed, uint64_t index, int size);

}  // namespace iomm::world
