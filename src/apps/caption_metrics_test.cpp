#include "apps/caption_metrics.h"

#include <gtest/gtest.h>

using namespace iomm;
using Words = std::vector<std::string>;

TEST(CaptionMetrics, ContentWordsAreCanonical) {
  EXPECT_EQ(caption_content_words("a photo of three red circles"), (Words{"three", "red", "circle"}));
  EXPECT_EQ(caption_content_words("3 Crosses"), (Words{"three", "cross"}));
  // "a" / "one" / "single" describe one object; they are phrasing, not a count.
  EXPECT_EQ(caption_content_words("one square"), (Words{"square"}));
  EXPECT_EQ(caption_content_words("a single triangle on a gray background"), (Words{"triangle"}));
  EXPECT_EQ(caption_content_words("a triangle that is green and a circle that is blue"),
            (Words{"triangle", "green", "circle", "blue"}));
}

TEST(CaptionMetrics, RelationsAreOneFactInEitherDirection) {
  const Words want{"circle", "circle left of square", "square"};
  EXPECT_EQ(caption_content_words("a circle left of a square"), want);
  EXPECT_EQ(caption_content_words("a circle to the left of a square"), want);
  const Words turned{"square", "circle left of square", "circle"};
  EXPECT_EQ(caption_content_words("a square on the right of a circle"), turned);
  EXPECT_EQ(caption_content_words("a red cross beneath a blue triangle"),
            (Words{"red", "cross", "triangle above cross", "blue", "triangle"}));
  EXPECT_EQ(caption_content_words("a cross over a circle"), (Words{"cross", "cross above circle", "circle"}));
}

TEST(CaptionMetrics, ScoreCountsMultisetMatches) {
  auto s = score_caption("a circle left of a square", "a square to the right of a circle");
  EXPECT_EQ(s.reference_words, 3);
  EXPECT_EQ(s.matched, 3);
  EXPECT_TRUE(s.all_match);
  EXPECT_FALSE(s.exact);

  // Wrong direction: the shapes match, the relation fact does not.
  s = score_caption("a circle left of a square", "a circle right of a square");
  EXPECT_EQ(s.matched, 2);
  EXPECT_FALSE(s.all_match);

  // Each generated word is used once: "red" twice in the reference, once in the generation.
  s = score_caption("a red circle and a red square", "a red circle and a blue square");
  EXPECT_EQ(s.reference_words, 4);
  EXPECT_EQ(s.matched, 3);

  // Extra content words break all_match but not the recall.
  s = score_caption("a circle", "a red circle");
  EXPECT_EQ(s.matched, 1);
  EXPECT_FALSE(s.all_match);

  s = score_caption("two squares", "two squares");
  EXPECT_TRUE(s.exact);
  EXPECT_TRUE(s.all_match);
  EXPECT_EQ(score_caption("two squares", "").matched, 0);
}

TEST(CaptionMetrics, TotalsPoolWords) {
  CaptionTotals t;
  t.add(score_caption("two squares", "two squares"));         // 2/2, exact
  t.add(score_caption("a red circle", "a blue circle"));      // 1/2
  t.add(score_caption("a triangle", "a triangle"));          // 1/1, exact
  t.add(score_caption("a cross", "a circle"));               // 0/1
  EXPECT_EQ(t.captions, 4);
  EXPECT_DOUBLE_EQ(t.exact_rate(), 0.5);
  EXPECT_DOUBLE_EQ(t.all_match_rate(), 0.5);
  EXPECT_DOUBLE_EQ(t.content_accuracy(), 4.0 / 6.0);
  EXPECT_DOUBLE_EQ(CaptionTotals{}.content_accuracy(), 0.0);
}
