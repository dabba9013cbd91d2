#include "core/log.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <stdlib.h>

#include <gtest/gtest.h>

using namespace iomm;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir() {
  std::string tmpl = ::testing::TempDir() + "/iomm_log_XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed for " + tmpl);
  return tmpl;
}

// What another process (or a reader after a kill -9) would see now: the logger is neither closed nor flushed.
std::string on_disk(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

TEST(Log, RunFileHasEachLineOnDiskAsSoonAsItIsLogged) {
  fs::path dir = temp_dir();
  log::set_run_file((dir / "log.txt").string());
  spdlog::info("step 7 of 10 done");
  EXPECT_NE(on_disk(dir / "log.txt").find("step 7 of 10 done"), std::string::npos);
  spdlog::warn("a second line");
  EXPECT_NE(on_disk(dir / "log.txt").find("a second line"), std::string::npos);

  // The next run's file replaces the first: later lines go only there.
  log::set_run_file((dir / "log2.txt").string());
  spdlog::info("stage two");
  EXPECT_NE(on_disk(dir / "log2.txt").find("stage two"), std::string::npos);
  EXPECT_EQ(on_disk(dir / "log.txt").find("stage two"), std::string::npos);
}

TEST(Log, FatalErrorGoesIntoTheRunFile) {
  fs::path dir = temp_dir();
  log::fatal("error: before any file");  // no file attached: nothing to do, and no throw
  log::set_run_file((dir / "log.txt").string());
  log::fatal("error: 'x.safetensors' is truncated");
  std::string text = on_disk(dir / "log.txt");
  EXPECT_NE(text.find("critical] error: 'x.safetensors' is truncated"), std::string::npos) << text;
}
