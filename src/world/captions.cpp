#include "world/captions.h"

#include <functional>

#include "core/error.h"

namespace iomm::world {

namespace {

using Phrasings = std::vector<std::string>;

const char* rel_inverse(const std::string& rel) {
  if (rel == "left of") return "right of";
  if (rel == "right of") return "left of";
  if (rel == "above") return "below";
  return "above";
}

// Spoken forms of a relation ("a circle <phrase> a square").
std::vector<std::string> rel_phrases(const std::string& rel) {
  if (rel == "left of") return {"left of", "to the left of", "on the left of"};
  if (rel == "right of") return {"right of", "to the right of", "on the right of"};
  if (rel == "above") return {"above", "over"};
  return {"below", "under", "beneath"};
}

std::string a(const std::string& noun) { return with_article(noun); }
std::string cs(Color c, Shape s) { return std::string(name(c)) + " " + name(s); }

// Picks a phrasing at random among those that are not held-out evaluation prompts.
std::string pick(const Phrasings& options, Rng& rng) {
  std::vector<const std::string*> ok;
  for (const auto& o : options)
    if (!heldout_prompt_strings().count(o)) ok.push_back(&o);
  if (ok.empty()) fail("caption grammar: every phrasing of '{}' is a held-out prompt", options.front());
  return *ok[rng.below(ok.size())];
}

Color any_color(Rng& rng) { return kColors[rng.below(kColors.size())]; }
Shape any_shape(Rng& rng) { return kShapes[rng.below(kShapes.size())]; }
void two_shapes(Rng& rng, Shape& x, Shape& y) {
  x = any_shape(rng);
  do y = any_shape(rng);
  while (y == x);
}
// Colours for two objects of different classes whose pair is not held out.
void allowed_colors(Rng& rng, Shape x, Shape y, Color& cx, Color& cy, bool distinct) {
  do {
    cx = any_color(rng);
    cy = any_color(rng);
  } while ((distinct && cx == cy) || heldout_color_pairs().count(pair_key(cx, x, cy, y)));
}

Requirement req(Shape s, int n, std::optional<Color> c = std::nullopt) {
  Requirement r{name(s), n, std::nullopt, std::nullopt};
  if (c) r.color = name(*c);
  return r;
}

}  // namespace

CaptionedSample make_captioned(uint64_t seed, uint64_t index, int size) {
  Rng rng(seed, hash_name("captioned"), index);
  const std::string tag = kTags[rng.below(kTags.size())];
  PromptSpec p;
  p.tag = tag;
  std::vector<Slot> slots;
  if (tag == "single_object") {
    const Shape s = any_shape(rng);
    const std::string n = name(s);
    p.prompt = pick({"a photo of " + a(n), a(n), "one " + n, "a single " + n, "an image of " + a(n),
                     a(n) + " on a gray background", "a picture of " + a(n)}, rng);
    p.include = {req(s, 1)};
    slots = {{s, any_color(rng)}};
  } else if (tag == "two_object") {
    Shape x, y;
    two_shapes(rng, x, y);
    Color cx, cy;
    allowed_colors(rng, x, y, cx, cy, false);
    const std::string nx = name(x), ny = name(y);
    p.prompt = pick({"a photo of " + a(nx) + " and " + a(ny), a(nx) + " and " + a(ny),
                     "an image of " + a(nx) + " and " + a(ny), a(nx) + " next to " + a(ny),
                     a(nx) + " with " + a(ny), "two shapes: " + a(nx) + " and " + a(ny)}, rng);
    p.include = {req(x, 1), req(y, 1)};
    slots = {{x, cx}, {y, cy}};
  } else if (tag == "counting") {
    const Shape s = any_shape(rng);
    const int n = rng.range(2, 4);
    const std::string w = number_word(n), pl = plural(name(s)), digit = std::to_string(n);
    std::optional<Color> same;
    if (rng.chance(0.3)) same = any_color(rng);
    if (same) {
      const std::string c = name(*same);
      p.prompt = pick({w + " " + c + " " + pl, "a photo of " + w + " " + c + " " + pl, digit + " " + c + " " + pl,
                       "exactly " + w + " " + c + " " + pl}, rng);
    } else {
      p.prompt = pick({"a photo of " + w + " " + pl, w + " " + pl, digit + " " + pl, "a group of " + w + " " + pl,
                       "exactly " + w + " " + pl, "an image of " + w + " " + pl}, rng);
    }
    p.include = {req(s, n, same)};
    p.exclude = {req(s, n + 1)};
    for (int k = 0; k < n; ++k) slots.push_back({s, same ? *same : any_color(rng)});
  } else if (tag == "colors") {
    const Shape s = any_shape(rng);
    const Color c = any_color(rng);
    const std::string n = name(s), cn = name(c);
    p.prompt = pick({"a photo of " + a(cs(c, s)), a(cs(c, s)), a(n) + " that is " + cn, a(cn + " colored " + n),
                     "an image of " + a(cs(c, s)), a(cs(c, s)) + " on a gray background", a(n) + " colored " + cn},
                    rng);
    p.include = {req(s, 1, c)};
    slots = {{s, c}};
  } else if (tag == "position") {
    // "x REL y": GenEval form include = [y, x with position (REL, 0)].
    Shape x, y;
    two_shapes(rng, x, y);
    Color cx, cy;
    allowed_colors(rng, x, y, cx, cy, false);
    const std::string rel = kRelations[rng.below(kRelations.size())];
    const bool say_colors = cx != cy && rng.chance(0.3);
    const std::string nx = say_colors ? cs(cx, x) : name(x), ny = say_colors ? cs(cy, y) : name(y);
    Phrasings options{"a photo of " + a(nx) + " " + rel + " " + a(ny)};
    for (const auto& ph : rel_phrases(rel)) options.push_back(a(nx) + " " + ph + " " + a(ny));
    for (const auto& ph : rel_phrases(rel_inverse(rel))) options.push_back(a(ny) + " " + ph + " " + a(nx));
    p.prompt = pick(options, rng);
    Requirement rx = req(x, 1, say_colors ? std::optional(cx) : std::nullopt);
    rx.position = std::make_pair(rel, 0);
    p.include = {req(y, 1, say_colors ? std::optional(cy) : std::nullopt), rx};
    slots = {{y, cy}, {x, cx, 0, rel}};
  } else {  // color_attr
    Shape x, y;
    two_shapes(rng, x, y);
    Color cx, cy;
    allowed_colors(rng, x, y, cx, cy, true);
    const std::string dx = cs(cx, x), dy = cs(cy, y);
    p.prompt = pick({"a photo of " + a(dx) + " and " + a(dy), a(dx) + " and " + a(dy), a(dy) + " and " + a(dx),
                     a(dx) + " next to " + a(dy),
                     a(name(x)) + " that is " + name(cx) + " and " + a(name(y)) + " that is " + name(cy),
                     "an image of " + a(dx) + " and " + a(dy), a(dx) + " with " + a(dy)}, rng);
    p.include = {req(x, 1, cx), req(y, 1, cy)};
    slots = {{x, cx}, {y, cy}};
  }
  return {p, layout(slots, size, rng)};
}

Scene make_unlabeled(uint64_t seed, uint64_t index, int size) {
  Rng rng(seed, hash_name("image"), index);
  const int n = rng.range(1, 4);
  std::vector<Slot> slots;
  for (int k = 0; k < n; ++k) slots.push_back({any_shape(rng), any_color(rng)});
  return layout(slots, size, rng);
}

}  // namespace iomm::world
