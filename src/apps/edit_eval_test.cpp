#include "apps/edit_eval.h"

#include <algorithm>

#include <gtest/gtest.h>

#include "core/error.h"
#include "world/prompts.h"
#include "world/scene.h"

namespace iomm {
namespace {

std::vector<EditCase> some_cases(int64_t n = 40) { return make_edit_cases(world::builtin_prompts("eval"), n, 3, 32); }

world::Scene recoloured(world::Scene s, world::Color c) {
  for (auto& o : s.objects) {
    o.color = c;
    o.fill = world::rgb(c);
  }
  return s;
}

TEST(EditEval, CasesAskForAColourTheSceneDoesNotHave) {
  auto cases = some_cases();
  ASSERT_EQ(cases.size(), 40u);
  for (const auto& c : cases) {
    ASSERT_FALSE(c.reference.objects.empty());
    for (const auto& o : c.reference.objects) EXPECT_NE(o.color, c.target) << c.instruction;
    EXPECT_EQ(c.instruction, std::string("make the shapes ") + world::name(c.target));
  }
  // Deterministic in the seed, different across seeds.
  auto again = some_cases();
  auto other = make_edit_cases(world::builtin_prompts("eval"), 40, 4, 32);
  int same = 0, differ = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    same += cases[i].instruction == again[i].instruction;
    differ += world::to_json(cases[i].reference) != world::to_json(other[i].reference);
  }
  EXPECT_EQ(same, 40);
  EXPECT_GT(differ, 20);
}

// The ideal edit scores 1, a copy of the reference 0 (everything kept, nothing applied), an empty canvas 0, and
// the right colour in the wrong places loses what it did not keep.
TEST(EditEval, ScoresKeptObjectsTimesAppliedColour) {
  int ideal = 0, copy = 0, empty = 0, wrong_colour = 0;
  double moved_kept = 0;
  auto cases = some_cases();
  for (const auto& c : cases) {
    auto e = score_edit(c.reference, c.target, world::render(recoloured(c.reference, c.target)));
    ideal += e.kept == 1.0 && e.applied == 1.0;
    auto k = score_edit(c.reference, c.target, world::render(c.reference));
    copy += k.kept == 1.0 && k.score() == 0.0;
    world::Scene blank = c.reference;
    blank.objects.clear();
    empty += score_edit(c.reference, c.target, world::render(blank)).score() == 0.0;
    // Recoloured to another colour that is not the target: kept, not applied.
    auto other = world::kColors[(size_t(c.target) + 1) % world::kColors.size()];
    wrong_colour += score_edit(c.reference, c.target, world::render(recoloured(c.reference, other))).applied < 1.0;
    // Every object mirrored to the other side of the canvas: mostly not kept.
    world::Scene moved = recoloured(c.reference, c.target);
    for (auto& o : moved.objects) o.x = 32 - o.size - o.x, o.y = 32 - o.size - o.y;
    moved_kept += score_edit(c.reference, c.target, world::render(moved)).kept;
  }
  // The detector reads rendered scenes (ground truth scores 1.0 in ShapesEval), but touching objects can merge.
  EXPECT_GE(ideal, 38);
  EXPECT_GE(copy, 38);
  EXPECT_EQ(empty, 40);
  EXPECT_EQ(wrong_colour, 40);
  EXPECT_LT(moved_kept / 40, 0.5);
}

TEST(EditEval, BadRequestsAreRefused) {
  EXPECT_THROW(make_edit_cases({}, 4, 0, 32), Error);
  EXPECT_THROW(make_edit_cases(world::builtin_prompts("eval"), 0, 0, 32), Error);
}

}  // namespace
}  // namespace iomm
