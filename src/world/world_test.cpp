// The tiny world: deterministic corpus, captions true to their images, held-out prompts never trained on.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/metrics.h"
#include "data/image.h"
#include "data/webdataset.h"
#include "world/captions.h"
#include "world/corpus.h"
#include "world/shapes_eval.h"

namespace fs = std::filesystem;

namespace iomm::world {
namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

fs::path temp_dir(const std::string& tag) {
  auto d = fs::temp_directory_path() / ("iomm_world_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

TEST(WorldRng, MatchesTheSpecifiedAlgorithms) {
  uint64_t state = 0;
  EXPECT_EQ(splitmix64(state), 0xE220A8397B1DCDAFull);  // splitmix64's published first output for seed 0
  Rng a(5, 1, 2), b(5, 1, 2), c(5, 1, 3);
  const uint64_t x = a.next();
  EXPECT_EQ(x, b.next());
  EXPECT_NE(x, c.next());
  Rng r(1);
  for (int i = 0; i < 1000; ++i) {
    const int v = r.range(2, 4);
    ASSERT_GE(v, 2);
    ASSERT_LE(v, 4);
    const double u = r.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

TEST(WorldRender, AntiAliasedShapesOnGrey) {
  Scene s;
  s.size = 32;
  s.background = {150, 150, 150};
  s.objects.push_back({Shape::square, Color::red, 4, 4, 10, rgb(Color::red)});
  const Raster r = render(s);
  EXPECT_EQ(r.at(9, 9)[0], 220);    // inside
  EXPECT_EQ(r.at(20, 20)[0], 150);  // background
  // JSON round trip gives the same pixels.
  EXPECT_EQ(render(scene_from_json(to_json(s))).pixels, r.pixels);
}

TEST(WorldPrompts, BuiltinSetsHaveGenEvalForm) {
  const auto eval = builtin_prompts("eval"), small = builtin_prompts("eval-small");
  EXPECT_GE(eval.size(), 150u);
  EXPECT_EQ(small.size(), 24u);
  std::map<std::string, int> tags;
  for (const auto& p : eval) {
    ++tags[p.tag];
    if (p.tag == "counting") {
      ASSERT_EQ(p.exclude.size(), 1u);
      EXPECT_EQ(p.exclude[0].count, p.include[0].count + 1);
    }
    if (p.tag == "position") {
      ASSERT_EQ(p.include.size(), 2u);
      ASSERT_TRUE(p.include[1].position.has_value());
      EXPECT_EQ(p.include[1].position->second, 0);
      EXPECT_EQ(p.prompt, "a photo of " + with_article(p.include[1].cls) + " " + p.include[1].position->first + " " +
                              with_article(p.include[0].cls));
    }
    // JSON round trip
    const auto back = prompt_from_json(nlohmann::json::parse(to_json(p).dump()), "test");
    EXPECT_EQ(to_json(back).dump(), to_json(p).dump());
  }
  EXPECT_EQ(tags.size(), 6u);
  EXPECT_EQ(to_json(eval[0]).dump(), R"({"tag":"single_object","include":[{"class":"circle","count":1}],"prompt":"a photo of a circle"})");
  std::set<std::string> all;
  for (const auto& p : eval) all.insert(p.prompt);
  for (const auto& p : small) EXPECT_TRUE(all.count(p.prompt)) << p.prompt;
  // the color_attr eval prompts are exactly the held-out pairs
  for (const auto& p : eval)
    if (p.tag == "color_attr")
      EXPECT_TRUE(heldout_color_pairs().count(pair_key(parse_color(*p.include[0].color), parse_shape(p.include[0].cls),
                                                       parse_color(*p.include[1].color), parse_shape(p.include[1].cls))));
}

TEST(WorldPrompts, MalformedMetadataNamesFileAndField) {
  try {
    prompt_from_json(nlohmann::json::parse(R"({"tag":"colors","prompt":"x"})"), "p.jsonl:3");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("p.jsonl:3: missing field 'include'"), std::string::npos) << e.what();
  }
}

TEST(WorldCaptions, NoTrainingCaptionIsAHeldOutPrompt) {
  std::map<std::string, std::set<std::string>> phrasings;
  for (uint64_t i = 0; i < 3000; ++i) {
    const CaptionedSample s = make_captioned(3, i, 32);
    ASSERT_FALSE(heldout_prompt_strings().count(s.spec.prompt)) << s.spec.prompt;
    phrasings[s.spec.tag].insert(s.spec.prompt);
    // no captioned image shows a held-out colour pair of two different classes
    for (size_t a = 0; a < s.scene.objects.size(); ++a)
      for (size_t b = a + 1; b < s.scene.objects.size(); ++b) {
        const auto &x = s.scene.objects[a], &y = s.scene.objects[b];
        if (x.shape != y.shape && x.color != y.color)
          ASSERT_FALSE(heldout_color_pairs().count(pair_key(x.color, x.shape, y.color, y.shape))) << s.spec.prompt;
      }
  }
  EXPECT_EQ(phrasings.size(), 6u);
  for (const auto& [tag, set] : phrasings) EXPECT_GE(set.size(), 10u) << tag;
}

TEST(WorldCaptions, CaptionsAreTrueToTheirImages) {
  int wrong = 0;
  for (uint64_t i = 0; i < 600; ++i) {
    const CaptionedSample s = make_captioned(4, i, 32);
    const Verdict v = judge(s.spec, detect(render(s.scene)));
    wrong += !v.correct;
    EXPECT_TRUE(v.correct) << s.spec.prompt << ": " << v.reason;
  }
  EXPECT_EQ(wrong, 0);
}

TEST(WorldCorpus, SameSeedSameBytesDifferentSeedDifferentBytes) {
  const auto a = temp_dir("a"), b = temp_dir("b"), c = temp_dir("c");
  CorpusOptions o{a.string(), 42, 32, 30, 20, 16, false};
  make_corpus(o);
  o.out = b.string();
  make_corpus(o);
  o.out = c.string();
  o.seed = 43;
  make_corpus(o);
  for (const char* f : {"image/shard-000000.tar", "image/shard-000001.tar", "captioned/shard-000000.tar",
                        "captioned/shard-000001.tar", "image/index.jsonl", "captioned/index.jsonl",
                        "prompts/eval.jsonl"}) {
    ASSERT_TRUE(fs::exists(a / f)) << f;
    EXPECT_EQ(slurp(a / f), slurp(b / f)) << f;
  }
  EXPECT_NE(slurp(a / "image/shard-000000.tar"), slurp(c / "image/shard-000000.tar"));
  EXPECT_NE(slurp(a / "captioned/shard-000000.tar"), slurp(c / "captioned/shard-000000.tar"));
  EXPECT_EQ(slurp(a / "prompts/eval.jsonl"), slurp(c / "prompts/eval.jsonl"));  // held-out sets are fixed
  // No temporary files left behind.
  for (const auto& e : fs::recursive_directory_iterator(a))
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();

  // Pools read back through the WebDataset reader: image-only has only .png, captioned has png+txt+json.
  data::WebDatasetReader img(data::expand_shards((a / "image").string()));
  data::Sample s;
  int n = 0;
  while (img.next(s)) {
    ++n;
    EXPECT_EQ(s.members.size(), 1u);
    EXPECT_TRUE(s.members.count("png"));
    EXPECT_EQ(decode_image_bytes(s.image()->data(), s.image()->size(), s.key).width, 32);
  }
  EXPECT_EQ(n, 30);
  const auto index = read_jsonl((a / "captioned/index.jsonl").string());
  ASSERT_EQ(index.size(), 20u);
  data::WebDatasetReader cap(data::expand_shards((a / "captioned").string()));
  n = 0;
  while (cap.next(s)) {
    EXPECT_EQ(s.key, index[size_t(n)]["key"]);
    EXPECT_EQ(s.caption().value(), index[size_t(n)]["caption"]);
    const auto meta = nlohmann::json::parse(*s.text("json"));
    EXPECT_EQ(meta["caption"], index[size_t(n)]["caption"]);
    // the stored scene re-renders to the stored image
    const Raster stored = to_raster(decode_image_bytes(s.image()->data(), s.image()->size(), s.key));
    EXPECT_EQ(render(scene_from_json(meta["scene"])).pixels, stored.pixels);
    ++n;
  }
  EXPECT_EQ(n, 20);
  EXPECT_EQ(cap.stats().skipped_samples, 0);
  for (const auto& d : {a, b, c}) fs::remove_all(d);
}

TEST(WorldCorpus, RejectsBadOptions) {
  CorpusOptions o{temp_dir("bad").string(), 0, 100, 1, 1, 1, false};
  EXPECT_THROW(make_corpus(o), Error);
}

}  // namespace
}  // namespace iomm::world
