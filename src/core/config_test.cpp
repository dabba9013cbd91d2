#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"

using namespace iomm;

static std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, ReadsTypedValuesAndDefaults) {
  auto c = Config::parse(R"(
[train]
steps = 100
lr = 1e-4
ema = true
name = "stage1"
buckets = [256, 512]
)", "run.toml");
  EXPECT_EQ(c.get_int("train.steps", 1), 100);
  EXPECT_DOUBLE_EQ(c.get_double("train.lr", 0), 1e-4);
  EXPECT_TRUE(c.get_bool("train.ema", false));
  EXPECT_EQ(c.get_string("train.name", ""), "stage1");
  EXPECT_EQ(c.get_int_list("train.buckets", {}), (std::vector<int64_t>{256, 512}));
  EXPECT_EQ(c.get_int("train.batch", 32), 32);  // default
  EXPECT_DOUBLE_EQ(c.get_double("train.steps", 0), 100.0);  // ints are numbers
}

TEST(Config, OverridesParseTomlValuesOrBareStrings) {
  auto c = Config::parse("[train]\nlr = 1e-4\n", "run.toml");
  c.set("train.lr=3e-4");
  c.set("train.mask_ratio=0.85");
  c.set("data.path=/data/shards/{000..009}.tar");
  c.set("model.axes=[16, 56, 56]");
  EXPECT_DOUBLE_EQ(c.get_double("train.lr", 0), 3e-4);
  EXPECT_DOUBLE_EQ(c.get_double("train.mask_ratio", 0), 0.85);
  EXPECT_EQ(c.get_string("data.path", ""), "/data/shards/{000..009}.tar");
  EXPECT_EQ(c.get_int_list("model.axes", {}), (std::vector<int64_t>{16, 56, 56}));
}

TEST(Config, MergeLaterWins) {
  auto base = Config::parse("[model]\nwidth = 64\ndepth = 2\n", "base.toml");
  base.merge(Config::parse("[model]\ndepth = 4\n", "over.toml"));
  EXPECT_EQ(base.get_int("model.width", 0), 64);
  EXPECT_EQ(base.get_int("model.depth", 0), 4);
}

TEST(Config, WrongTypeNamesKeyAndSource) {
  auto c = Config::parse("[train]\nsteps = \"many\"\n", "run.toml");
  auto msg = error_of([&] { c.get_int("train.steps", 1); });
  EXPECT_NE(msg.find("train.steps"), std::string::npos) << msg;
  EXPECT_NE(msg.find("run.toml"), std::string::npos) << msg;
  EXPECT_NE(msg.find("integer"), std::string::npos) << msg;
}

TEST(Config, RangeAndChoiceErrorsListAllowedValues) {
  auto c = Config::parse("[train]\nmask_ratio = 1.5\nsampling = \"gaussian\"\n", "run.toml");
  auto msg = error_of([&] { c.get_double("train.mask_ratio", 0, 0.0, 1.0); });
  EXPECT_NE(msg.find("out of range"), std::string::npos) << msg;
  msg = error_of([&] { c.get_choice("train.sampling", "uniform", {"uniform", "logit_normal"}); });
  EXPECT_NE(msg.find("uniform, logit_normal"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gaussian"), std::string::npos) << msg;
}

TEST(Config, UnknownKeysAreReportedWithKnownNeighbours) {
  auto c = Config::parse("[train]\nlr = 1e-4\nlrr = 2\n", "run.toml");
  c.get_double("train.lr", 0);
  EXPECT_EQ(c.unused_keys(), std::vector<std::string>{"train.lrr"});
  auto msg = error_of([&] { c.check_unused(); });
  EXPECT_NE(msg.find("'train.lrr'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("known keys here: lr"), std::string::npos) << msg;
}

TEST(Config, ResolvedDumpHasDefaultsAndReparses) {
  auto c = Config::parse("[train]\nlr = 0.5\n", "run.toml");
  c.get_double("train.lr", 0);
  c.get_int("train.steps", 7);
  std::string path = ::testing::TempDir() + "/resolved.toml";
  c.write_resolved(path);
  auto back = Config::load(path);
  EXPECT_DOUBLE_EQ(back.get_double("train.lr", 0), 0.5);
  EXPECT_EQ(back.get_int("train.steps", 0), 7);
}

TEST(Config, InvalidTomlNamesFileAndLine) {
  auto msg = error_of([] { Config::parse("[train\nx=1\n", "bad.toml"); });
  EXPECT_NE(msg.find("bad.toml:1"), std::string::npos) << msg;
  msg = error_of([] { Config::load("/nonexistent/run.toml"); });
  EXPECT_NE(msg.find("/nonexistent/run.toml"), std::string::npos) << msg;
}

TEST(Config, BaseFileLoadsFirstAndTheFileOverrides) {
  auto dir = std::filesystem::temp_directory_path() / ("iomm-cfg-base-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "sub");
  auto put = [&](const std::string& name, const std::string& text) { std::ofstream(dir / name) << text; };
  put("base.toml", "[train]\nsteps = 10\nbatch_size = 4\n[optim]\nlr = 0.1\n");
  put("sub/stage.toml", "base = \"../base.toml\"\n[train]\nsteps = 20\n");
  auto cfg = Config::load((dir / "sub/stage.toml").string());
  EXPECT_EQ(cfg.get_int("train.steps", 0), 20);       // the file wins
  EXPECT_EQ(cfg.get_int("train.batch_size", 0), 4);   // the base fills in
  EXPECT_DOUBLE_EQ(cfg.get_double("optim.lr", 0), 0.1);
  EXPECT_FALSE(cfg.has("base"));
  EXPECT_NO_THROW(cfg.check_unused());
  put("a.toml", "base = \"b.toml\"\n");
  put("b.toml", "base = \"a.toml\"\n");
  auto msg = error_of([&] { Config::load((dir / "a.toml").string()); });
  EXPECT_NE(msg.find("cycle"), std::string::npos) << msg;
  msg = error_of([&] { put("c.toml", "base = \"missing.toml\"\n"); Config::load((dir / "c.toml").string()); });
  EXPECT_NE(msg.find("missing.toml"), std::string::npos) << msg;
  // A list: applied in order (the later base wins), the file on top of both.
  put("model.toml", "[model]\nwidth = 8\n[train]\nsteps = 5\nseed = 3\n");
  put("sub/both.toml", "base = [\"../model.toml\", \"../base.toml\"]\n[train]\nseed = 7\n");
  cfg = Config::load((dir / "sub/both.toml").string());
  EXPECT_EQ(cfg.get_int("model.width", 0), 8);
  EXPECT_EQ(cfg.get_int("train.steps", 0), 10);  // base.toml comes after model.toml
  EXPECT_EQ(cfg.get_int("train.seed", 0), 7);
  msg = error_of([&] { put("d.toml", "base = []\n"); Config::load((dir / "d.toml").string()); });
  EXPECT_NE(msg.find("base must name"), std::string::npos) << msg;
  std::filesystem::remove_all(dir);
}

TEST(Fs, AtomicWriteReplacesAndLeavesNoTemp) {
  std::string path = ::testing::TempDir() + "/atomic.txt";
  write_file_atomic(path, std::string("one"));
  write_file_atomic(path, std::string("two"));
  EXPECT_EQ(read_file(path), "two");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_NE(error_of([] { write_file_atomic("/nonexistent-dir/x", std::string("a")); }).find("/nonexistent-dir/x"),
            std::string::npos);
}

#include "core/run_dir.h"

TEST(RunDir, WritesResolvedConfigAndRefusesToOverwriteARun) {
  std::string dir = ::testing::TempDir() + "/run_dir_test_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  auto cfg = Config::parse("[train]\nlr = 0.25\n", "run.toml");
  cfg.set("train.steps=12");
  cfg.get_double("train.lr", 0);
  cfg.get_int("train.steps", 0);
  cfg.get_int("train.batch", 8);
  auto run = RunDir::open(dir, /*resume=*/false);
  run.write_config(cfg);
  auto resolved = Config::load(run.file("config.toml"));
  EXPECT_EQ(resolved.get_int("train.batch", 0), 8);
  EXPECT_EQ(resolved.get_int("train.steps", 0), 12);
  EXPECT_NE(read_file(run.file("config.input.toml")).find("--set train.steps"), std::string::npos);
  auto msg = error_of([&] { RunDir::open(dir, /*resume=*/false); });
  EXPECT_NE(msg.find("--resume"), std::string::npos) << msg;
  EXPECT_NO_THROW(RunDir::open(dir, /*resume=*/true));
}
