#include "apps/generation_record.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"

using namespace iomm;

namespace {
GenerationRecord sample_record() {
  GenerationRecord r;
  r.task = "edit";
  r.prompt = "make the circle blue \xe2\x9c\x93";
  r.seed = 18446744073709551615ull;
  r.steps = 7;
  r.cfg_scale = 3.25;
  r.sampler = "dpmpp_2m";
  r.shift = 1.5;
  r.model_fingerprint = "sha256:abc";
  return r;
}
}  // namespace

TEST(GenerationRecord, JsonRoundTripWithEveryField) {
  auto r = sample_record();
  auto j = to_json(r);
  EXPECT_TRUE(j.contains("negative_prompt") && j["negative_prompt"].is_null());
  auto back = record_from_json(nlohmann::json::parse(j.dump()), "x");
  EXPECT_EQ(back.task, r.task);
  EXPECT_EQ(back.prompt, r.prompt);
  EXPECT_EQ(back.seed, r.seed);
  EXPECT_EQ(back.steps, r.steps);
  EXPECT_EQ(back.cfg_scale, r.cfg_scale);
  EXPECT_EQ(back.sampler, r.sampler);
  EXPECT_EQ(back.shift, r.shift);
  EXPECT_EQ(back.model_fingerprint, r.model_fingerprint);
  EXPECT_EQ(to_json(back).dump(), j.dump());  // deterministic: same record, same chunk bytes
}

TEST(GenerationRecord, ReadFromAPngAndRefusedWithoutOne) {
  auto dir = std::filesystem::temp_directory_path() / ("iomm_record_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  Image img(4, 4, 3);
  auto with = (dir / "with.png").string(), without = (dir / "without.png").string();
  write_png(img, with, {{kPngRecordKey, to_json(sample_record()).dump()}});
  write_png(img, without);
  EXPECT_EQ(read_png_record(with).prompt, sample_record().prompt);
  try {
    read_png_record(without);
    FAIL() << "no error for a PNG without a record";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no 'iomm-parameters' text chunk"), std::string::npos) << e.what();
  }
  auto bad = nlohmann::json::parse(to_json(sample_record()).dump());
  bad["steps"] = "many";
  try {
    record_from_json(bad, "x.png");
    FAIL() << "no error for a string steps";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'steps'"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}
