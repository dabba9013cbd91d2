// Data sources: loaded counts checked against the data's index.jsonl (issue 17: damage never goes unnoticed).
#include "data/data_source.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "data/image.h"
#include "data/image_pool.h"
#include "data/sample_stream.h"

namespace fs = std::filesystem;

namespace iomm::data {
namespace {

// DIR/shard-000000.tar with `n` decodable PNGs (keys 0000..), and DIR/index.jsonl listing `indexed` of them the way
// iomm world writes it.
fs::path world_like(const std::string& tag, int n, int indexed) {
  const auto d = fs::temp_directory_path() / ("iomm_ds_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  const auto png = encode_png(Image(8, 8, 3));
  WebDatasetWriter w(d.string(), 100);
  for (int i = 0; i < n; ++i) w.write(fmt::format("{:04d}", i), {{"png", std::string(png.begin(), png.end())}});
  w.close();
  std::ofstream index(d / "index.jsonl");
  for (int i = 0; i < indexed; ++i) index << fmt::format(R"({{"shard": "shard-000000.tar", "key": "{:04d}"}})", i) << "\n";
  return d;
}

TEST(DataSource, LoadedCountsAgreeWithTheIndex) {
  const auto d = world_like("agree", 3, 3);
  const auto src = DataSource::open(d.string());
  const auto pool = load_image_pool(d.string(), 8, false, 0, false);
  EXPECT_EQ(pool.stats.loaded, 3);
  ASSERT_TRUE(indexed_samples(src).has_value());
  EXPECT_EQ(indexed_samples(src)->samples, 3);
  EXPECT_EQ(check_against_index(src, pool.stats.loaded, pool.stats.skipped), "");
  // Samples skipped with a cause are accounted for: no warning on top of the skip count.
  SkipCounts skips;
  skips.add("undecodable", "shard-000000.tar: 0002");
  EXPECT_EQ(check_against_index(src, 2, skips), "");
  fs::remove_all(d);
}

TEST(DataSource, SamplesLostWithoutACauseAreReportedWithTheCounts) {
  const auto d = world_like("lost", 3, 5);  // two samples the shard lost, e.g. cut at a member boundary
  const auto src = DataSource::open(d.string());
  const auto pool = load_image_pool(d.string(), 8, false, 0, false);
  const std::string w = check_against_index(src, pool.stats.loaded, pool.stats.skipped);
  EXPECT_NE(w.find("lists 5 samples"), std::string::npos) << w;
  EXPECT_NE(w.find("3 were loaded and 0 skipped"), std::string::npos) << w;
  EXPECT_NE(w.find("2 missing"), std::string::npos) << w;
  EXPECT_NE(w.find((d / "index.jsonl").string()), std::string::npos) << w;
  EXPECT_NE(w.find("iomm data scan"), std::string::npos) << w;
  // The other way round: the index is older than the shards.
  EXPECT_NE(check_against_index(src, 6, {}).find("1 more than indexed"), std::string::npos);
  fs::remove_all(d);
}

// The streaming loader (data.loader = "stream") checks when its first epoch ends.
TEST(DataSource, TheStreamComparesItsFirstEpochWithTheIndex) {
  const auto d = world_like("stream", 3, 5);
  StreamOptions o;
  o.resolution = 8;
  o.shuffle_buffer = 1;
  SampleStream stream(DataSource::open(d.string()), o);
  for (int i = 0; i < 3; ++i) stream.next();
  EXPECT_EQ(stream.index_mismatch(), "");  // not before the epoch ends
  stream.next();                           // the first sample of epoch 1
  EXPECT_NE(stream.index_mismatch().find("lists 5 samples"), std::string::npos) << stream.index_mismatch();
  EXPECT_NE(stream.index_mismatch().find("2 missing"), std::string::npos) << stream.index_mismatch();
  fs::remove_all(d);
}

TEST(DataSource, DataWithoutAnIndexIsNotChecked) {
  const auto d = world_like("noindex", 2, 0);
  fs::remove(d / "index.jsonl");
  const auto src = DataSource::open(d.string());
  EXPECT_FALSE(indexed_samples(src).has_value());
  EXPECT_EQ(check_against_index(src, 1, {}), "");
  fs::remove_all(d);
}

}  // namespace
}  // namespace iomm::data
