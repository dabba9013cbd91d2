// ShapesEval: ground truth scores ~1 (sharp, blurred, noisy), violations score 0, GenEval's rules hold.
#include "world/shapes_eval.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "core/error.h"
#include "data/image.h"
#include "world/corpus.h"

namespace iomm::world {
namespace {

// Separable Gaussian blur (radius 3 sigma-ish), edges clamped, rounded back to 8 bits.
Raster gaussian_blur(const Raster& r, double sigma) {
  const int R = int(std::ceil(3 * sigma));
  std::vector<double> k;
  double sum = 0;
  for (int i = -R; i <= R; ++i) sum += k.emplace_back(std::exp(-i * i / (2 * sigma * sigma)));
  for (auto& v : k) v /= sum;
  Raster tmp = r, out = r;
  for (int pass = 0; pass < 2; ++pass) {
    const Raster& src = pass ? tmp : r;
    Raster& dst = pass ? out : tmp;
    for (int y = 0; y < r.height; ++y)
      for (int x = 0; x < r.width; ++x)
        for (int c = 0; c < 3; ++c) {
          double acc = 0;
          for (int i = -R; i <= R; ++i) {
            const int xx = pass ? x : std::clamp(x + i, 0, r.width - 1), yy = pass ? std::clamp(y + i, 0, r.height - 1) : y;
            acc += k[size_t(i + R)] * src.at(xx, yy)[c];
          }
          dst.at(x, y)[c] = uint8_t(std::lround(acc));
        }
  }
  return out;
}

// Independent Gaussian noise per pixel and channel, sigma on a 0..1 scale.
Raster add_noise(const Raster& r, double sigma, Rng& rng) {
  Raster out = r;
  for (auto& p : out.pixels) p = uint8_t(std::clamp<long>(std::lround(p + 255 * sigma * rng.normal()), 0, 255));
  return out;
}

// Scores K ground-truth samples per prompt, after `distort`, without touching the disk.
template <typename Distort>
EvalResult score_ground_truth(const std::vector<PromptSpec>& prompts, int k, int size, Distort distort) {
  EvalResult r;
  for (size_t i = 0; i < prompts.size(); ++i)
    for (int s = 0; s < k; ++s) {
      ImageRecord rec;
      rec.prompt_index = int(i);
      rec.tag = prompts[i].tag;
      rec.detections = detect(distort(render(ground_truth_scene(prompts[i], i, s, 7, size))));
      rec.verdict = judge(prompts[i], rec.detections);
      r.images.push_back(std::move(rec));
    }
  summarize(r);
  return r;
}

void expect_high(const EvalResult& r, const char* what) {
  EXPECT_GE(r.overall, 0.98) << what;
  EXPECT_EQ(r.categories.size(), 6u) << what;
  for (const auto& [tag, c] : r.categories) EXPECT_GE(c.score(), 0.95) << what << ": " << tag;
}

TEST(ShapesEval, GroundTruthOfEveryBuiltinSetScoresNearOne) {
  for (const char* set : kBuiltinSets)
    for (int size : {32, 64}) {
      const auto r = score_ground_truth(builtin_prompts(set), 2, size, [](const Raster& x) { return x; });
      expect_high(r, set);
    }
}

TEST(ShapesEval, GroundTruthSurvivesBlur) {
  const auto r = score_ground_truth(builtin_prompts("eval"), 2, 32, [](const Raster& x) { return gaussian_blur(x, 0.7); });
  EXPECT_GE(r.overall, 0.95);
  for (const auto& [tag, c] : r.categories) EXPECT_GE(c.score(), 0.95) << tag;
}

TEST(ShapesEval, GroundTruthSurvivesColourNoise) {
  Rng rng(11);
  const auto r = score_ground_truth(builtin_prompts("eval"), 2, 32, [&](const Raster& x) { return add_noise(x, 0.05, rng); });
  EXPECT_GE(r.overall, 0.95);
  for (const auto& [tag, c] : r.categories) EXPECT_GE(c.score(), 0.95) << tag;
}

// Images an untrained or collapsed generator makes: random colour per `cell` x `cell` block (cell 1 = per-pixel
// noise, 4 = the DiT's 4x4 patch noise), around a grey level.
Raster colour_noise(int size, int cell, double amplitude, Rng& rng) {
  Raster r(size, size);
  for (int by = 0; by < size; by += cell)
    for (int bx = 0; bx < size; bx += cell) {
      std::array<uint8_t, 3> c;
      for (auto& v : c) v = uint8_t(std::clamp<long>(std::lround(128 + 255 * amplitude * rng.normal()), 0, 255));
      for (int y = by; y < std::min(size, by + cell); ++y)
        for (int x = bx; x < std::min(size, bx + cell); ++x) std::copy(c.begin(), c.end(), r.at(x, y));
    }
  return r;
}

TEST(ShapesEval, ColourNoiseIsUnreadableAndScoresZero) {
  // Before the readability check (detect.h step 6) such images passed 3 of 4 single_object prompts.
  const auto prompts = builtin_prompts("eval");
  int passed = 0, total = 0;
  for (int cell : {1, 2, 4})
    for (double amplitude : {0.2, 0.35})
      for (size_t i = 0; i < prompts.size(); i += 3) {
        Rng rng(5, i, uint64_t(cell * 100 + amplitude * 100));
        const SceneReading scene = read_scene(colour_noise(32, cell, amplitude, rng));
        EXPECT_FALSE(scene.readable) << "cell " << cell << " amplitude " << amplitude << " stray " << scene.stray;
        EXPECT_TRUE(scene.objects.empty());
        const Verdict v = judge(prompts[i], scene);
        EXPECT_NE(v.reason.find("unreadable scene"), std::string::npos) << v.reason;
        passed += v.correct, ++total;
      }
  // Weak per-pixel noise (the sigma GroundTruthSurvivesColourNoise uses) is a plain grey background: readable, empty.
  Rng rng(6);
  const SceneReading weak = read_scene(colour_noise(32, 1, 0.05, rng));
  EXPECT_TRUE(weak.readable) << weak.stray;
  EXPECT_TRUE(weak.objects.empty());
  EXPECT_EQ(passed, 0) << "of " << total;
}

TEST(ShapesEval, GreyTextureAroundAGoodShapeIsUnreadable) {
  // A correct red circle on a background of grey blotches: the background is not the tiny world's.
  Scene s;
  s.size = 32;
  s.background = {128, 128, 128};
  Object o;
  o.shape = Shape::circle, o.color = Color::red, o.x = 10, o.y = 10, o.size = 12, o.fill = rgb(Color::red);
  s.objects.push_back(o);
  const Raster clean = render(s);
  EXPECT_TRUE(read_scene(clean).readable);
  EXPECT_EQ(read_scene(clean).objects.size(), 1u);
  Raster blotchy = clean;
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x)
      if (((x / 4) + (y / 4)) % 2 == 0 && (x < 8 || x > 24 || y < 8 || y > 24))
        for (int c = 0; c < 3; ++c) blotchy.at(x, y)[c] = 200;  // neutral, far off the background level
  const SceneReading r = read_scene(blotchy);
  EXPECT_FALSE(r.readable) << r.stray;
  EXPECT_GT(r.stray, 0.2);
}

TEST(ShapesEval, GroundTruthHasLittleStray) {
  // The margin the max_stray threshold (0.1) keeps from real scenes, sharp, blurred and noisy.
  Rng rng(3);
  const auto prompts = builtin_prompts("eval");
  double worst = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const Raster gt = render(ground_truth_scene(prompts[i], i, 0, 7, 32));
    for (const Raster& x : {gt, gaussian_blur(gt, 0.7), add_noise(gt, 0.05, rng)}) worst = std::max(worst, read_scene(x).stray);
  }
  EXPECT_LT(worst, 0.05);
}

// Renders a deliberately wrong scene for each prompt of `tag` (slots edited by `spoil`), and counts passes.
template <typename Spoil>
int passes_of_spoiled(const std::string& tag, Spoil spoil, int* total, int size = 32) {
  int pass = 0;
  *total = 0;
  const auto prompts = builtin_prompts("eval");
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].tag != tag) continue;
    for (int s = 0; s < 2; ++s) {
      Rng rng(99, i, uint64_t(s));
      auto slots = slots_for_prompt(prompts[i], rng);
      spoil(slots, rng);
      pass += judge(prompts[i], detect(render(layout(slots, size, rng)))).correct;
      ++*total;
    }
  }
  return pass;
}

TEST(ShapesEval, ViolationsScoreZero) {
  int total = 0;
  // wrong colour
  EXPECT_EQ(passes_of_spoiled("colors", [](std::vector<Slot>& s, Rng&) {
              s[0].color = Color((int(s[0].color) + 1) % int(kColors.size()));
            }, &total), 0);
  EXPECT_GT(total, 0);
  // colour attribution swapped between the two objects
  EXPECT_EQ(passes_of_spoiled("color_attr", [](std::vector<Slot>& s, Rng&) { std::swap(s[0].color, s[1].color); },
                              &total), 0);
  // one object too few
  EXPECT_EQ(passes_of_spoiled("counting", [](std::vector<Slot>& s, Rng&) { s.pop_back(); }, &total), 0);
  // one too many: the excluded count (5 objects need a larger image)
  EXPECT_EQ(passes_of_spoiled("counting", [](std::vector<Slot>& s, Rng&) { s.push_back(s.back()); }, &total, 64), 0);
  // swapped positions: the relation inverted
  EXPECT_EQ(passes_of_spoiled("position", [](std::vector<Slot>& s, Rng&) {
              auto& r = s[1].relation;
              r = r == "left of" ? "right of" : r == "right of" ? "left of" : r == "above" ? "below" : "above";
            }, &total), 0);
  // a missing object
  EXPECT_EQ(passes_of_spoiled("two_object", [](std::vector<Slot>& s, Rng&) { s.erase(s.begin()); }, &total), 0);
  // wrong class
  EXPECT_EQ(passes_of_spoiled("single_object", [](std::vector<Slot>& s, Rng&) {
              s[0].shape = Shape((int(s[0].shape) + 1) % int(kShapes.size()));
            }, &total), 0);
}

TEST(ShapesEval, RelativePositionFollowsGenEval) {
  // a is 10 px left of b, same row: "left of" only.
  EXPECT_EQ(relative_position({0, 0, 4, 4}, {10, 0, 14, 4}), std::set<std::string>{"left of"});
  // diagonal: both relations, like GenEval (dx, dy both < -0.5 of the norm after the threshold shrink)
  EXPECT_EQ(relative_position({0, 0, 2, 2}, {20, 20, 22, 22}), (std::set<std::string>{"above", "left of"}));
  // overlapping centres within the threshold: no relation
  EXPECT_TRUE(relative_position({0, 0, 10, 10}, {0.5, 0.5, 10.5, 10.5}).empty());
  // below: +y is down
  EXPECT_EQ(relative_position({0, 20, 4, 24}, {0, 0, 4, 4}), std::set<std::string>{"below"});
}

TEST(ShapesEval, JudgeAppliesIncludeAndExcludeRules) {
  auto det = [](Shape s, Color c, double x, double conf) {
    Detection d;
    d.shape = s, d.color = c, d.confidence = conf, d.bbox = {x, 10, x + 6, 16};
    return d;
  };
  PromptSpec two{"counting", {{"circle", 2, std::nullopt, std::nullopt}}, {{"circle", 3, std::nullopt, std::nullopt}},
                 "a photo of two circles", {}};
  EXPECT_TRUE(judge(two, {det(Shape::circle, Color::red, 0, .9), det(Shape::circle, Color::blue, 10, .8)}).correct);
  const Verdict three = judge(two, {det(Shape::circle, Color::red, 0, .9), det(Shape::circle, Color::blue, 10, .8),
                                    det(Shape::circle, Color::red, 20, .7)});
  EXPECT_FALSE(three.correct);
  EXPECT_EQ(three.reason, "expected circle<3, found 3");
  // Colour is checked on the most confident objects of the class only (GenEval's CHANGED rule).
  PromptSpec red{"colors", {{"square", 1, "red", std::nullopt}}, {}, "a photo of a red square", {}};
  EXPECT_FALSE(judge(red, {det(Shape::square, Color::blue, 0, .9), det(Shape::square, Color::red, 20, .5)}).correct);
  EXPECT_TRUE(judge(red, {det(Shape::square, Color::red, 0, .9), det(Shape::square, Color::blue, 20, .5)}).correct);
  // Extra objects of other classes do not matter without an exclude clause.
  EXPECT_TRUE(judge(red, {det(Shape::square, Color::red, 0, .9), det(Shape::cross, Color::red, 20, .9)}).correct);
}

TEST(ShapesEval, FolderRenderEvaluateAndGrid) {
  const auto dir = std::filesystem::temp_directory_path() / ("iomm_shapes_eval_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  const auto prompts = builtin_prompts("eval-small");
  render_prompts(prompts, dir.string(), 2, 5, 32, false);
  ASSERT_TRUE(std::filesystem::exists(dir / "00003" / "samples" / "0001.png"));
  EXPECT_EQ(read_prompts((dir / "00003" / "metadata.jsonl").string()).front().prompt, prompts[3].prompt);
  const EvalResult r = evaluate_folder(dir.string());
  EXPECT_EQ(r.images.size(), prompts.size() * 2);
  EXPECT_DOUBLE_EQ(r.overall, 1.0);
  EXPECT_DOUBLE_EQ(r.correct_prompts, 1.0);
  const auto j = r.to_json();
  EXPECT_EQ(j["categories"].size(), 6u);
  EXPECT_EQ(j["images"][0]["filename"], "00000/samples/0000.png");
  write_grid(r, dir.string(), (dir / "grid.png").string());
  const Image g = decode_image((dir / "grid.png").string());
  EXPECT_GT(g.width, 32 * 4);
  // The first tile's frame is green (pass).
  EXPECT_EQ(g.at(1, 1, 1), 180);
  EXPECT_EQ(g.at(1, 1, 0), 0);
  std::filesystem::remove_all(dir);
}

// --- metadata that ShapesEval cannot judge is refused, naming the file, the line and the field ---

class ShapesEvalMetadata : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir = std::filesystem::temp_directory_path() /
          fmt::format("iomm_shapes_meta_{}_{}", ::getpid(), info->name());
    std::filesystem::remove_all(dir);
    render_prompts({builtin_prompts("eval-small")[0], builtin_prompts("eval-small")[1]}, dir.string(), 1, 5, 32,
                   false);
    meta = (dir / "00001" / "metadata.jsonl").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  // Prompt 1's metadata after a blank first line, so that the error must name line 2; returns the error.
  std::string error_with(const std::string& line) {
    std::ofstream(meta) << "\n" << line << "\n";
    try {
      evaluate_folder(dir.string());
    } catch (const Error& e) {
      return e.what();
    }
    return "<no error>";
  }
  std::filesystem::path dir;
  std::string meta;
};

// `{"tag": TAG, "include": [INCLUDE], "prompt": "p"}`
std::string line_of(const std::string& include, const std::string& tag = "colors") {
  return R"({"tag": ")" + tag + R"(", "include": [)" + include + R"(], "prompt": "p"})";
}

TEST_F(ShapesEvalMetadata, CountMustBeAnIntegerNotOneOrTrueOrAWrappingNumber) {
  // nlohmann's get<int>() made each of these 1: a counting prompt silently became "one object".
  for (const std::string count : {"1.5", "true", "4294967297", "0", "\"2\"", "101"}) {
    std::string msg = error_with(line_of(R"({"class": "circle", "count": )" + count + "}"));
    EXPECT_NE(msg.find(meta + ":2: field 'include[0].count' must be an integer from 1 to 100"), std::string::npos)
        << count << ": " << msg;
  }
  std::string msg = error_with(line_of(R"({"class": "circle", "count": 1}, {"class": "square", "count": 2.0})"));
  EXPECT_NE(msg.find("field 'include[1].count'"), std::string::npos) << msg;
}

TEST_F(ShapesEvalMetadata, UnknownClassOrColourIsAnErrorNotAFailedImage) {
  struct Case {
    std::string include, field, value;
  };
  for (const Case& c : {Case{R"({"class": "circle", "count": 1, "color": "magenta"})", "include[0].color", "magenta"},
                        Case{R"({"class": "circle", "count": 1, "color": "RED"})", "include[0].color", "RED"},
                        Case{R"({"class": "circle", "count": 1, "color": ""})", "include[0].color", ""},
                        Case{R"({"class": "RED", "count": 1})", "include[0].class", "RED"},
                        Case{R"({"class": "", "count": 1})", "include[0].class", ""},
                        Case{R"({"class": "dog", "count": 1})", "include[0].class", "dog"}}) {
    std::string msg = error_with(line_of(c.include));
    EXPECT_NE(msg.find(meta + ":2: field '" + c.field + "' is '" + c.value + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("lower case"), std::string::npos) << msg;
  }
  std::string msg = error_with(R"({"tag": "counting", "include": [{"class": "circle", "count": 2}], )"
                               R"("exclude": [{"class": "Circle", "count": 3}], "prompt": "p"})");
  EXPECT_NE(msg.find("field 'exclude[0].class' is 'Circle'"), std::string::npos) << msg;
}

TEST_F(ShapesEvalMetadata, UnknownTagIsAnErrorNotANewCategory) {
  std::string msg = error_with(line_of(R"({"class": "circle", "count": 1})", "colour"));
  EXPECT_NE(msg.find(meta + ":2: field 'tag' is 'colour'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("single_object, two_object, counting, colors, position, color_attr"), std::string::npos) << msg;
}

TEST_F(ShapesEvalMetadata, EmptyIncludeIsAnErrorNotAPass) {
  std::string msg = error_with(line_of(""));
  EXPECT_NE(msg.find(meta + ":2: field 'include' is empty"), std::string::npos) << msg;
}

TEST_F(ShapesEvalMetadata, PromptWithoutSamplesIsAnErrorNotDropped) {
  std::filesystem::remove(dir / "00001" / "samples" / "0000.png");
  std::string msg = error_with(line_of(R"({"class": "circle", "count": 1})"));
  EXPECT_NE(msg.find("'" + (dir / "00001" / "samples").string() + "' holds no <0000>.png samples"), std::string::npos)
      << msg;
  std::filesystem::remove(dir / "00001" / "samples");
  msg = error_with(line_of(R"({"class": "circle", "count": 1})"));
  EXPECT_NE(msg.find("holds no <0000>.png samples"), std::string::npos) << msg;
}

TEST_F(ShapesEvalMetadata, TwoFoldersForOnePromptIndexAreAnError) {
  std::filesystem::copy(dir / "00001", dir / "000001", std::filesystem::copy_options::recursive);
  std::string msg = error_with(line_of(R"({"class": "circle", "count": 1})"));
  EXPECT_NE(msg.find("are both prompt 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find((dir / "00001").string() + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find((dir / "000001").string() + "'"), std::string::npos) << msg;
}

TEST_F(ShapesEvalMetadata, ValidMetadataStillScores) {
  EXPECT_EQ(error_with(to_json(builtin_prompts("eval-small")[1]).dump()), "<no error>");
}

}  // namespace
}  // namespace iomm::world
