// WebDataset shards: round trip, the key rule, skip-and-count, errors that name the shard; image folders.
#include "data/webdataset.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace fs = std::filesystem;

namespace iomm::data {
namespace {

fs::path temp_dir(const std::string& tag) {
  auto d = fs::temp_directory_path() / ("iomm_wds_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string str(const std::vector<uint8_t>& v) { return {v.begin(), v.end()}; }

TEST(WebDataset, SplitKeyFollowsTheWebDatasetRule) {
  std::string k, e;
  ASSERT_TRUE(split_key("a/b.c.d", k, e));
  EXPECT_EQ(k, "a/b");
  EXPECT_EQ(e, "c.d");
  ASSERT_TRUE(split_key("dir.v1/x.JPG", k, e));  // dots in directories do not count
  EXPECT_EQ(k, "dir.v1/x");
  EXPECT_EQ(e, "jpg");
  EXPECT_FALSE(split_key("noext", k, e));
  EXPECT_FALSE(split_key("d/.hidden.txt", k, e));
  EXPECT_FALSE(split_key("__key__.txt", k, e));
}

// Found by fuzz/webdataset_tar (the input is kept in its corpus): a GNU long-name header cut short makes libarchive
// fail without a message; formatting the NULL threw fmt::format_error, which even the tolerant reader let through.
TEST(WebDataset, ADamagedHeaderWithoutALibarchiveMessageIsCountedOrNamed) {
  std::ifstream in(std::string(IOMM_SOURCE_DIR) + "/fuzz/corpus/webdataset_tar/crash-null-archive-message",
                   std::ios::binary);
  ASSERT_TRUE(in);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto d = temp_dir("nullmsg");
  const std::string shard = (d / "shard.tar").string();
  std::ofstream(shard, std::ios::binary) << bytes.substr(1);  // the first byte is the fuzz target's mode
  WebDatasetReader tolerant({shard}, "", true);
  Sample s;
  EXPECT_FALSE(tolerant.next(s));
  EXPECT_EQ(tolerant.stats().damaged_shards, 1);
  EXPECT_NE(tolerant.stats().first_damaged_shard.find(shard), std::string::npos) << tolerant.stats().first_damaged_shard;
  WebDatasetReader strict({shard});
  try {
    strict.next(s);
    FAIL() << "a damaged shard was read without an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shard '" + shard + "'"), std::string::npos) << e.what();
  }
  fs::remove_all(d);
}

TEST(WebDataset, WriteReadRoundTripAcrossShards) {
  const auto d = temp_dir("rt");
  {
    WebDatasetWriter w(d.string(), 2);
    for (int i = 0; i < 5; ++i)
      EXPECT_EQ(w.write(fmt::format("{:04d}", i), {{"png", "PNG" + std::to_string(i)}, {"txt", "caption " + std::to_string(i)}}),
                fmt::format("shard-{:06d}.tar", i / 2));
    w.close();
    EXPECT_EQ(w.shards().size(), 3u);
  }
  WebDatasetReader r(expand_shards(d.string()));
  Sample s;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(r.next(s));
    EXPECT_EQ(s.key, fmt::format("{:04d}", i));
    EXPECT_EQ(str(*s.image()), "PNG" + std::to_string(i));
    EXPECT_EQ(s.image_ext(), "png");
    EXPECT_EQ(s.caption().value(), "caption " + std::to_string(i));
    EXPECT_EQ(s.shard, (d / fmt::format("shard-{:06d}.tar", i / 2)).string());
  }
  EXPECT_FALSE(r.next(s));
  EXPECT_EQ(r.stats().samples, 5);
  EXPECT_EQ(r.stats().shards, 3);
  EXPECT_EQ(r.stats().members, 10);
  // brace spec = the same shards
  EXPECT_EQ(expand_shards((d / "shard-{000000..000002}.tar").string()), expand_shards(d.string()));
  EXPECT_THROW(expand_shards((d / "shard-{000000..000003}.tar").string()), Error);
  fs::remove_all(d);
}

TEST(WebDataset, SkipsAndCountsSamplesWithoutImagesAndBadNames) {
  const auto d = temp_dir("skip");
  {
    TarWriter t((d / "s.tar").string());
    t.add("a.txt", "only text", 9);  // no image: skipped
    t.add("README", "x", 1);        // no extension: skipped member
    t.add("b.jpg", "J", 1);
    t.add("b.json", R"({"prompt": "from json"})", 23);
    t.add("c.webp", "W", 1);
    t.close();
  }
  WebDatasetReader r({(d / "s.tar").string()});
  Sample s;
  ASSERT_TRUE(r.next(s));
  EXPECT_EQ(s.key, "b");
  EXPECT_EQ(s.caption().value(), "from json");
  ASSERT_TRUE(r.next(s));
  EXPECT_EQ(s.key, "c");
  EXPECT_FALSE(s.caption().has_value());
  EXPECT_FALSE(r.next(s));
  EXPECT_EQ(r.stats().samples, 2);
  EXPECT_EQ(r.stats().skipped_samples, 1);
  EXPECT_EQ(r.stats().skipped_members, 1);
  EXPECT_NE(r.stats().summary().find("skipped 1 samples without an image"), std::string::npos);
  fs::remove_all(d);
}

TEST(WebDataset, ErrorsNameTheShardAndMember) {
  const auto d = temp_dir("err");
  {
    TarWriter t((d / "dup.tar").string());
    t.add("k.png", "1", 1);
    t.add("k.png", "2", 1);
    t.close();
  }
  Sample s;
  try {
    WebDatasetReader r({(d / "dup.tar").string()});
    r.next(s);
    FAIL() << "duplicate member accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dup.tar"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("k.png"), std::string::npos);
  }
  // a truncated shard
  {
    std::string big(5000, 'x');
    TarWriter t((d / "full.tar").string());
    t.add("k.png", big.data(), big.size());
    t.close();
    std::ifstream in(d / "full.tar", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream out(d / "cut.tar", std::ios::binary);
    out.write(bytes.data(), 512 + 1000);
  }
  try {
    WebDatasetReader r({(d / "cut.tar").string()});
    while (r.next(s)) {
    }
    FAIL() << "truncated shard accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cut.tar"), std::string::npos) << e.what();
  }
  EXPECT_THROW(expand_shards((d / "missing.tar").string()), Error);
  fs::remove_all(d);
}

// A shard cut inside a sample's member: the samples whose members were all read before the cut are kept (also the
// one just before it, whose end the reader only knows from the next sample's first header), the cut one is dropped,
// the damage is counted once.
TEST(WebDataset, ACutShardKeepsTheSamplesBeforeTheCut) {
  const auto d = temp_dir("cut");
  std::string big(3000, 'x');
  {
    TarWriter t((d / "full.tar").string());
    for (const char* k : {"a", "b", "c"}) {
      t.add(std::string(k) + ".png", big.data(), big.size());
      t.add(std::string(k) + ".txt", "caption", 7);
    }
    t.close();
  }
  std::ifstream in(d / "full.tar", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  // Members are a 512-byte header plus data padded to 512: a.png ends at 3584, a.txt at 4608, b.png at 8192.
  auto read_cut = [&](size_t at) {
    const auto cut = d / ("cut-" + std::to_string(at) + ".tar");
    std::ofstream(cut, std::ios::binary).write(bytes.data(), std::streamsize(at));
    WebDatasetReader r({cut.string()}, "", /*tolerate_damage=*/true);
    std::vector<std::string> keys;
    Sample s;
    while (r.next(s)) keys.push_back(s.key + ":" + std::to_string(s.members.size()));
    EXPECT_EQ(r.stats().damaged_shards, 1) << at;
    return keys;
  };
  EXPECT_EQ(read_cut(4608 + 512 + 1000), (std::vector<std::string>{"a:2"}));  // inside b.png's data
  EXPECT_EQ(read_cut(4608 + 100), (std::vector<std::string>{}));  // inside the next header: a may have had more
  EXPECT_EQ(read_cut(3584 + 512 + 3), (std::vector<std::string>{}));          // inside a.txt: a is dropped
  EXPECT_EQ(read_cut(8192 + 512 + 3), (std::vector<std::string>{"a:2"}));     // inside b.txt: b is dropped
  fs::remove_all(d);
}

TEST(WebDataset, WriterIsAtomicAndDeterministic) {
  const auto d = temp_dir("det");
  for (const char* name : {"x.tar", "y.tar"}) {
    TarWriter t((d / name).string());
    t.add("0.png", "abc", 3);
    EXPECT_FALSE(fs::exists(d / name));  // only the temporary exists until close()
    t.close();
  }
  std::ifstream a(d / "x.tar", std::ios::binary), b(d / "y.tar", std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(a), {}), std::string(std::istreambuf_iterator<char>(b), {}));
  {
    TarWriter t((d / "abandoned.tar").string());
    t.add("0.png", "abc", 3);
  }  // destroyed without close(): nothing is left
  EXPECT_FALSE(fs::exists(d / "abandoned.tar"));
  EXPECT_EQ(std::distance(fs::directory_iterator(d), fs::directory_iterator()), 2);
  fs::remove_all(d);
}

TEST(WebDataset, ImageFolderReaderPairsSameStemCaptions) {
  const auto d = temp_dir("folder");
  fs::create_directories(d / "sub");
  std::ofstream(d / "a.png") << "A";
  std::ofstream(d / "a.txt") << "a caption";
  std::ofstream(d / "sub" / "b.JPG") << "B";
  std::ofstream(d / "notes.md") << "ignored";
  ImageFolderReader r(d.string());
  EXPECT_EQ(r.size(), 2u);
  Sample s;
  ASSERT_TRUE(r.next(s));
  EXPECT_EQ(s.key, "a");
  EXPECT_EQ(s.caption().value(), "a caption");
  ASSERT_TRUE(r.next(s));
  EXPECT_EQ(s.key, "sub/b");
  EXPECT_EQ(s.image_ext(), "jpg");
  EXPECT_FALSE(s.caption().has_value());
  EXPECT_FALSE(r.next(s));
  fs::remove_all(d);
}

}  // namespace
}  // namespace iomm::data
