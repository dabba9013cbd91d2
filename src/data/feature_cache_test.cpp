// The feature cache's format without a model: tar members round-trip, safetensors bytes in memory equal the file
// save_tensors writes, manifests round-trip, and FeatureCache::open refuses unfinished, incomplete or mixed caches.
#include "data/feature_cache.h"

#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/tensor_io.h"
#include "data/webdataset.h"
#include "testing/tiny_fixtures.h"

using namespace iomm;
using namespace iomm::data;
namespace fs = std::filesystem;

namespace {

FeatureManifest manifest(int64_t rank, int64_t world, std::vector<std::string> shards) {
  FeatureManifest m;
  m.fingerprints = {"ae:1", "vit:1", "tok:1", "tpl:1", 16, "float32"};
  m.preprocess = "p";
  m.latent_shape = {16, 8, 8};
  m.c_img_shape = {4, 32};
  m.source = "src";
  m.unit = "tar";
  m.input_units = 4;
  m.rank = rank;
  m.world_size = world;
  m.finished = true;
  for (auto& s : shards) m.shards.push_back({s, 2, 1, 0, {{"undecodable", 1}}, false});
  return m;
}

// A shard of two samples with the given names under `dir`.
void write_shard(const std::string& dir, const std::string& name, float value) {
  TarWriter tar(dir + "/" + name);
  for (int i = 0; i < 2; ++i) {
    FeatureSample s{fmt::format("{}-{}", name.substr(9, 6), i), torch::full({16, 8, 8}, value + float(i)),
                    torch::full({4, 32}, value), torch::tensor({1, 2, 3}, torch::kLong), "a caption"};
    for (const auto& [ext, bytes] : feature_members(s)) tar.add(s.key + "." + ext, bytes.data(), bytes.size());
  }
  tar.close();
}

}  // namespace

TEST(FeatureCacheFormat, SafetensorsBytesEqualTheFileAndRoundTrip) {
  std::map<std::string, at::Tensor> t{{"latents", torch::randn({16, 2, 2})},
                                      {"input_ids", torch::tensor({5, 6, 7}, torch::kLong)}};
  auto path = fixtures::temp_dir("st_bytes") + "/a.safetensors";
  save_tensors(path, t);
  auto bytes = tensors_to_bytes(t);
  EXPECT_EQ(bytes, read_file(path));
  auto back = tensors_from_bytes(bytes, "member");
  ASSERT_EQ(back.size(), 2u);
  EXPECT_TRUE(torch::equal(back.at("latents"), t.at("latents")));
  EXPECT_TRUE(torch::equal(back.at("input_ids"), t.at("input_ids")));
  EXPECT_THROW(tensors_from_bytes(bytes.substr(0, bytes.size() - 4), "cut member"), Error);
  EXPECT_NE(fingerprint_tensors(t), fingerprint_tensors({{"latents", t.at("latents") * 1.0001}}));
}

TEST(FeatureCacheFormat, ManifestRoundTripsAndReaderYieldsSamplesInInputOrder) {
  auto dir = fixtures::temp_dir("cache_fmt");
  write_shard(dir, "features-000001.tar", 10);
  write_shard(dir, "features-000000.tar", 0);
  write_manifest(dir, manifest(0, 1, {"features-000001.tar", "features-000000.tar"}));
  auto back = read_manifest(dir + "/manifest.json");
  ASSERT_TRUE(back);
  EXPECT_EQ(back->to_json(), manifest(0, 1, {"features-000001.tar", "features-000000.tar"}).to_json());
  EXPECT_EQ(back->samples, 4);
  EXPECT_EQ(back->skipped.at("undecodable"), 2);
  auto cache = FeatureCache::open(dir);
  EXPECT_EQ(cache.samples(), 4);
  FeatureCacheReader reader(cache);
  FeatureSample s;
  std::vector<std::string> keys;
  while (reader.next(s)) keys.push_back(s.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"000000-0", "000000-1", "000001-0", "000001-1"}));
  EXPECT_EQ(s.caption.value_or(""), "a caption");
  EXPECT_TRUE(torch::equal(s.latents, torch::full({16, 8, 8}, 11.0f)));
  EXPECT_TRUE(torch::equal(s.input_ids, torch::tensor({1, 2, 3}, torch::kLong)));
}

TEST(FeatureCacheFormat, OpenRefusesUnfinishedIncompleteOrMixedCaches) {
  auto expect_refused = [](const std::string& dir, const std::string& needle) {
    try {
      FeatureCache::open(dir);
      ADD_FAILURE() << dir << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto dir = fixtures::temp_dir("cache_ranks");
  expect_refused(dir, "not a feature cache");
  write_shard(dir, "features-000000.tar", 0);
  write_shard(dir, "features-000001.tar", 1);
  write_manifest(dir, manifest(1, 2, {"features-000001.tar"}));
  expect_refused(dir, "manifest.rank-0.json is missing");
  auto r0 = manifest(0, 2, {"features-000000.tar"});
  r0.finished = false;
  write_manifest(dir, r0);
  expect_refused(dir, "unfinished");
  r0.finished = true;
  r0.fingerprints.autoencoder = "ae:2";
  write_manifest(dir, r0);
  expect_refused(dir, "autoencoder fingerprint");
  r0.fingerprints.autoencoder = "ae:1";
  write_manifest(dir, r0);
  auto cache = FeatureCache::open(dir);
  EXPECT_EQ(cache.shard_paths().size(), 2u);
  EXPECT_EQ(cache.samples(), 4);
  fs::remove(dir + "/features-000001.tar");
  expect_refused(dir, "features-000001.tar listed in");
}
