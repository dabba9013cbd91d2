// Prompts in GenEval's metadata.jsonl form, the built-in held-out evaluation sets, and ground-truth scenes
// for a prompt.
//
// GenEval's form (djghosh13/geneval, prompts/create_prompts.py): one JSON object per line,
//   {"tag": "position", "include": [{"class": "square", "count": 1},
//                                    {"class": "circle", "count": 1, "position": ["left of", 0]}],
//    "prompt": "a photo of a circle left of a square"}
// `position: [rel, i]` means "this object is `rel` the objects matched by include[i]". Counting prompts carry
// `exclude: [{"class": c, "count": n + 1}]` (n + 1 or more objects of c fail).
#pragma once
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "world/rng.h"
#include "world/scene.h"

namespace iomm::world {

inline constexpr std::array<const char*, 6> kTags = {"single_object", "two_object", "counting",
                                                     "colors",        "position",   "color_attr"};
inline constexpr std::array<const char*, 4> kRelations = {"left of", "right of", "above", "below"};

struct Requirement {
  std::string cls;
  int count = 1;
  std::optional<std::string> color;
  std::optional<std::pair<std::string, int>> position;  // (relation, index into include)
};

struct PromptSpec {
  std::string tag;
  std::vector<Requirement> include, exclude;
  std::string prompt;
  nlohmann::ordered_json raw;  // the line as read (kept verbatim in rendered metadata); null when built here
};

// `where` names the file and line in error messages.
PromptSpec prompt_from_json(const nlohmann::json& j, const std::string& where);
nlohmann::ordered_json to_json(const PromptSpec& p);  // GenEval's key order: tag, include, exclude, prompt
std::vector<PromptSpec> read_prompts(const std::string& path);
// The same, with each prompt's 1-based line number (for messages naming FILE:LINE).
std::vector<std::pair<int, PromptSpec>> read_prompts_with_lines(const std::string& path);
// The same from the file's text (`path` names it in errors): the fuzz target's entry point.
std::vector<std::pair<int, PromptSpec>> parse_prompt_lines(const std::string& text, const std::string& path);
void write_prompts(const std::vector<PromptSpec>& prompts, const std::string& path);  // atomic

// GenEval's prompt templates ("a photo of a red circle and a blue square", ...).
std::string with_article(const std::string& noun);
std::string plural(const std::string& noun);
std::string number_word(int n);

// Built-in sets: "eval" (every single_object, two_object, counting, colors and position prompt of the world,
// and the held-out colour pairs in both orders) and "eval-small" (4 prompts per category, a subset of "eval").
// Fixed: they do not depend on the corpus seed.
std::vector<PromptSpec> builtin_prompts(const std::string& name);
inline constexpr std::array<const char*, 2> kBuiltinSets = {"eval", "eval-small"};
// Every prompt string of every built-in set: no training caption may equal one of these.
const std::set<std::string>& heldout_prompt_strings();
// Colour-attribution combinations never shown together in a training caption: canonical keys from
// pair_key(). The eval set's color_attr prompts are exactly these pairs.
const std::set<std::string>& heldout_color_pairs();
std::string pair_key(Color ca, Shape sa, Color cb, Shape sb);  // order-independent

// What the layout must realise: one entry per object; `relative_to` >= 0 asks for `relation` between this
// object and that earlier one ("this is left of that").
struct Slot {
  Shape shape;
  Color color;
  int relative_to = -1;
  std::string relation = {};
};

// Places the slots without overlaps (a margin between objects so segmentation separates them), on a random
// grey background, each relation holding by a wide margin under GenEval's rule. Fails only for impossible
// requests (e.g. 9 objects in 32 px).
Scene layout(const std::vector<Slot>& slots, int size, Rng& rng);
// The objects a prompt asks for, exactly (count objects per include; unspecified colours drawn at random).
std::vector<Slot> slots_for_prompt(const PromptSpec& p, Rng& rng);

// GenEval's relative_position: the set of relations of box a (x0, y0, x1, y1) relative to box b, with
// POSITION_THRESHOLD `threshold` (0.1 in GenEval).
std::set<std::string> relative_position(const std::array<double, 4>& a, const std::array<double, 4>& b,
                                        double threshold = 0.1);

}  // namespace iomm::world
