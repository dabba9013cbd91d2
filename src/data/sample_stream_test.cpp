// The streaming loader: every sample once per epoch across ranks, an order independent of the worker count,
// exact resume, skips counted by cause, and a clear stop on a shard that cannot be opened.
#include "data/sample_stream.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/error.h"
#include "data/image.h"
#include "data/image_pool.h"

namespace fs = std::filesystem;

namespace iomm::data {
namespace {

fs::path temp_dir(const std::string& tag) {
  auto d = fs::temp_directory_path() / ("iomm_stream_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// A 4x4 PNG whose pixels encode `i`, so a test can tell which image it got after decoding.
std::string png_for(int64_t i) {
  Image img;
  img.width = img.height = 4;
  img.channels = 3;
  img.pixels.assign(48, uint8_t(i % 251));
  img.pixels[0] = uint8_t(i / 251);
  auto bytes = encode_png(img);
  return {bytes.begin(), bytes.end()};
}

// `n` samples "000000".."n-1" with captions, `per_shard` to a shard.
fs::path write_set(const std::string& tag, int64_t n, int64_t per_shard) {
  auto d = temp_dir(tag);
  WebDatasetWriter w(d.string(), per_shard);
  for (int64_t i = 0; i < n; ++i)
    w.write(fmt::format("{:06d}", i), {{"png", png_for(i)}, {"txt", "caption " + std::to_string(i)}});
  w.close();
  return d;
}

std::vector<std::string> read_keys(SampleStream& s, int64_t n) {
  std::vector<std::string> keys;
  for (int64_t i = 0; i < n; ++i) keys.push_back(s.next().key);
  return keys;
}

StreamOptions opts(int workers = 2, int rank = 0, int world = 1) {
  StreamOptions o;
  o.resolution = 4;
  o.seed = 7;
  o.shuffle_buffer = 16;
  o.workers = workers;
  o.prefetch = 8;
  o.rank = rank;
  o.world_size = world;
  return o;
}

TEST(SampleStream, TwoRanksTimesTwoWorkersReadEverySampleOncePerEpoch) {
  auto d = write_set("ranks", 230, 20);  // 12 shards, the last one short
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    std::multiset<std::string> seen;
    for (int rank = 0; rank < 2; ++rank) {
      SampleStream s(DataSource::open(d.string()), opts(2, rank, 2));
      for (int64_t e = 0; e < epoch; ++e)
        while (s.next_in_epoch()) {
        }
      while (auto x = s.next_in_epoch()) {
        EXPECT_EQ(x->position.epoch, epoch);
        seen.insert(x->key);
      }
    }
    EXPECT_EQ(seen.size(), 230u) << "epoch " << epoch;
    EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 230u) << "a sample was read twice";
  }
  fs::remove_all(d);
}

TEST(SampleStream, OrderDependsOnSeedAndEpochButNotOnWorkers) {
  auto d = write_set("order", 100, 10);
  SampleStream one(DataSource::open(d.string()), opts(1));
  SampleStream three(DataSource::open(d.string()), opts(3));
  auto a = read_keys(one, 250), b = read_keys(three, 250);
  EXPECT_EQ(a, b);
  std::vector<std::string> e0(a.begin(), a.begin() + 100), e1(a.begin() + 100, a.begin() + 200);
  EXPECT_NE(e0, e1) << "epochs must be reshuffled";
  std::vector<std::string> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_NE(sorted, e0) << "the first epoch was not shuffled";
  auto o = opts(1);
  o.seed = 8;
  SampleStream other(DataSource::open(d.string()), o);
  EXPECT_NE(read_keys(other, 100), e0);
  fs::remove_all(d);
}

TEST(SampleStream, ImagesAndCaptionsArriveDecodedWithTheirKeys) {
  auto d = write_set("decode", 30, 10);
  auto o = opts();
  o.require_captions = true;
  SampleStream s(DataSource::open(d.string()), o);
  for (int i = 0; i < 30; ++i) {
    auto x = s.next();
    int64_t k = std::stoll(x.key);
    ASSERT_EQ(x.image.sizes(), (std::vector<int64_t>{3, 4, 4}));
    EXPECT_EQ(x.image.scalar_type(), torch::kUInt8);
    EXPECT_EQ(x.image[1][1][1].item<int>(), int(k % 251)) << x.key;
    EXPECT_EQ(x.caption, "caption " + std::to_string(k));
  }
  fs::remove_all(d);
}

TEST(SampleStream, ResumedStreamReadsExactlyTheSamplesThatFollow) {
  auto d = write_set("resume", 90, 10);
  SampleStream whole(DataSource::open(d.string()), opts());
  auto expected = read_keys(whole, 200);  // crosses two epoch ends
  for (int64_t stop : {1, 37, 89, 90, 131}) {
    SampleStream first(DataSource::open(d.string()), opts());
    auto got = read_keys(first, stop);
    auto state = first.state();
    SampleStream second(DataSource::open(d.string()), opts(1));  // another worker count: same samples
    second.restore(nlohmann::json::parse(state.dump()), "test");
    auto rest = read_keys(second, 200 - stop);
    got.insert(got.end(), rest.begin(), rest.end());
    EXPECT_EQ(got, expected) << "stopped after " << stop;
  }
  fs::remove_all(d);
}

TEST(SampleStream, RestoreRefusesAnotherWorldSizeOrSeed) {
  auto d = write_set("refuse", 40, 10);
  SampleStream a(DataSource::open(d.string()), opts(1, 0, 2));
  read_keys(a, 3);
  SampleStream b(DataSource::open(d.string()), opts(1, 0, 1));
  try {
    b.restore(a.state(), "ckpt/step-3");
    FAIL() << "a state of world size 2 was accepted by world size 1";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("world_size"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("ckpt/step-3"), std::string::npos) << e.what();
  }
  fs::remove_all(d);
}

// A good shard with one sample of each kind of damage, and a truncated shard.
fs::path write_damaged_set() {
  auto d = temp_dir("damage");
  {
    TarWriter t((d / "a-good.tar").string());
    for (int i = 0; i < 5; ++i) {
      auto png = png_for(i);
      t.add(fmt::format("g{}.png", i), png.data(), png.size());
      t.add(fmt::format("g{}.txt", i), "ok", 2);
    }
    auto png = png_for(9);
    t.add("nocap.png", png.data(), png.size());   // no caption
    t.add("broken.png", "not a png", 9);           // undecodable
    t.add("broken.txt", "x", 1);
    t.add("notimage.json", "{}", 2);                // a sample without an image
    t.add("noext", "x", 1);                         // a member without an extension
    t.add("badutf.png", png.data(), png.size());
    t.add("badutf.txt", "\xff\xfe", 2);             // not UTF-8
    t.close();
    TarWriter c((d / "b-cut.tar").string());
    for (int i = 0; i < 3; ++i) {
      std::string big(3000, char(i));
      auto png = png_for(100 + i);
      c.add(fmt::format("c{}.png", i), png.data(), png.size());
      c.add(fmt::format("c{}.txt", i), big.data(), big.size());
    }
    c.close();
  }
  auto cut = d / "b-cut.tar";
  fs::resize_file(cut, fs::file_size(cut) - 2500);  // the last caption and the end blocks are gone
  return d;
}

// The stream goes on and counts each kind by cause.
TEST(SampleStream, DamageIsCountedByCauseAndTheRunGoesOn) {
  auto d = write_damaged_set();
  auto o = opts();
  o.require_captions = true;
  SampleStream s(DataSource::open(d.string()), o);
  std::set<std::string> keys;
  while (auto x = s.next_in_epoch()) keys.insert(x->key);
  EXPECT_EQ(s.position().epoch, 1);
  auto sk = s.skips();
  EXPECT_EQ(sk.count["no_caption"], 1) << sk.summary();
  EXPECT_EQ(sk.count["undecodable"], 1) << sk.summary();
  EXPECT_EQ(sk.count["no_image"], 1) << sk.summary();
  EXPECT_EQ(sk.count["bad_member"], 1) << sk.summary();
  EXPECT_EQ(sk.count["bad_caption"], 1) << sk.summary();
  EXPECT_EQ(sk.count["damaged_shard"], 1) << sk.summary();
  EXPECT_NE(sk.first["undecodable"].find("broken"), std::string::npos) << sk.first["undecodable"];
  EXPECT_NE(sk.first["damaged_shard"].find("b-cut.tar"), std::string::npos) << sk.first["damaged_shard"];
  EXPECT_EQ(keys, (std::set<std::string>{"g0", "g1", "g2", "g3", "g4", "c0", "c1"}));
  fs::remove_all(d);
}

// The in-memory pool reads through the same source and preprocessing: the same samples, the same counts.
TEST(ImagePool, LoadsTheStreamsSamplesAndCountsTheSameSkips) {
  auto d = write_damaged_set();
  auto pool = load_image_pool(d.string(), 4, /*require_captions=*/true, 0, false);
  EXPECT_EQ(pool.size(), 7);
  auto& sk = pool.stats.skipped;
  for (const char* cause : {"no_caption", "undecodable", "no_image", "bad_member", "bad_caption", "damaged_shard"})
    EXPECT_EQ(sk.count[cause], 1) << cause << ": " << sk.summary();
  std::set<std::string> keys(pool.keys.begin(), pool.keys.end());
  EXPECT_EQ(keys, (std::set<std::string>{"g0", "g1", "g2", "g3", "g4", "c0", "c1"}));
  EXPECT_EQ(pool.captions[0], "ok");
  EXPECT_EQ(pool.images[0][0][1][1].item<int>(), 0);  // g0's pixels (png_for(0))
  fs::remove_all(d);
}

TEST(SampleStream, AShardThatCannotBeOpenedStopsTheRunNamingIt) {
  auto d = write_set("gone", 40, 10);
  auto src = DataSource::open(d.string());
  fs::remove(d / "shard-000002.tar");
  auto o = opts();
  o.shuffle_buffer = 1;
  SampleStream s(std::move(src), o);
  try {
    for (int i = 0; i < 40; ++i) s.next();
    FAIL() << "a missing shard was not reported";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shard-000002.tar"), std::string::npos) << e.what();
  }
  fs::remove_all(d);
}

TEST(DataSource, FoldersIndexesAndShardListsResolveToUnits) {
  auto d = write_set("src", 25, 10);
  {
    std::ofstream l(d / "list.txt");
    l << "# shards\nshard-000001.tar\n\n" << (d / "shard-000000.tar").string() << "\n";
  }
  auto list = DataSource::open((d / "list.txt").string());
  ASSERT_EQ(list.units.size(), 2u);
  EXPECT_EQ(fs::path(list.units[0].shard).filename(), "shard-000001.tar");
  auto img = d / "img";
  fs::create_directories(img / "sub");
  for (int i = 0; i < 5; ++i) {
    std::ofstream(img / "sub" / fmt::format("{}.png", i), std::ios::binary) << png_for(i);
  }
  std::ofstream(img / "sub" / "3.txt") << "three";
  auto folder = DataSource::open(img.string(), /*files_per_unit=*/2);
  EXPECT_EQ(folder.units.size(), 3u);
  {
    std::ofstream j(d / "index.jsonl");
    j << R"({"image": "img/sub/1.png", "caption": "one"})" << "\n" << R"({"image": "img/sub/missing.png"})" << "\n";
  }
  auto idx = DataSource::open((d / "index.jsonl").string());
  auto o = opts(1);
  o.require_captions = true;
  SampleStream s(std::move(idx), o);
  auto x = s.next();
  EXPECT_EQ(x.caption, "one");
  EXPECT_EQ(s.skips().count["missing_file"], 1);  // read while the sample sat in the shuffle buffer
  s.next();  // the next epoch reads the index again, and counts again
  EXPECT_EQ(s.skips().count["missing_file"], 2);
  EXPECT_NE(s.skips().first["missing_file"].find("missing.png"), std::string::npos);
  SampleStream f(std::move(folder), opts(1));
  std::map<std::string, std::string> caps;
  for (int i = 0; i < 5; ++i) {
    auto y = f.next();
    caps[y.key] = y.caption;
  }
  EXPECT_EQ(caps["sub/3"], "three");
  EXPECT_EQ(caps.size(), 5u);
  std::ofstream(d / "bad.jsonl") << R"({"path": "x.png"})" << "\n";
  EXPECT_THROW(DataSource::open((d / "bad.jsonl").string()), Error);
  fs::remove_all(d);
}

TEST(SampleStream, FewerUnitsThanRanksIsRefusedAtStart) {
  auto d = write_set("few", 10, 10);
  EXPECT_THROW(SampleStream(DataSource::open(d.string()), opts(1, 1, 2)), Error);
  fs::remove_all(d);
}

}  // namespace
}  // namespace iomm::data
