#include "apps/tiny_world_demo.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "core/config.h"
#include "core/error.h"

namespace iomm {
namespace {

namespace fs = std::filesystem;

const std::string kExperiments = std::string(IOMM_SOURCE_DIR) + "/experiments";

// Every shipped ablation parses, names a known stage in each override, and carries the name the table shows.
TEST(ExperimentOverrides, EveryShippedExperimentParses) {
  int files = 0;
  for (auto& e : fs::directory_iterator(kExperiments)) {
    if (e.path().extension() != ".toml") continue;
    ++files;
    std::string name;
    auto ov = experiment_overrides(e.path().string(), &name);
    EXPECT_EQ(name, e.path().stem().string()) << e.path();
    EXPECT_FALSE(ov.empty()) << e.path() << " changes nothing";
    for (auto& o : ov) {
      auto stage = o.substr(0, o.find(':'));
      EXPECT_TRUE(stage == "model" || stage == "pretrain" || stage == "finetune") << o;
    }
  }
  EXPECT_EQ(files, 14);  // 7 recipes + 3 adapters + 4 mask ratios
}

// Overrides are TOML assignments: applied to a config they set the values the file names.
Config applied(const std::vector<std::string>& overrides, const std::string& stage) {
  Config cfg;
  for (auto& o : overrides)
    if (o.rfind(stage + ":", 0) == 0) cfg.set(o.substr(stage.size() + 1));
  return cfg;
}

// Design candidates (experiments/designs/) parse too; the learned-autoencoder design asks the demo for its phase.
TEST(ExperimentOverrides, DesignCandidatesParse) {
  int files = 0;
  for (auto& e : fs::directory_iterator(kExperiments + "/designs")) {
    if (e.path().extension() != ".toml") continue;
    ++files;
    std::string name;
    EXPECT_FALSE(experiment_overrides(e.path().string(), &name).empty()) << e.path();
    EXPECT_EQ(name, e.path().stem().string()) << e.path();
  }
  EXPECT_GE(files, 1);
  auto ov = experiment_overrides(kExperiments + "/designs/latent-ae.toml");
  auto applied_model = applied(ov, "model");
  EXPECT_EQ(applied_model.get_string("model.autoencoder", ""), "learned") << ov.size() << " overrides";
  // The old pixel default is one file away: it undoes every key the demo's model adds to iomm-tiny.toml.
  auto pixel = applied(experiment_overrides(kExperiments + "/designs/pixel.toml"), "model");
  auto latent = Config::load(std::string(IOMM_SOURCE_DIR) + "/configs/world/iomm-tiny-latent.toml");
  for (const char* key : {"model.autoencoder", "generator.latent_channels", "generator.patch_size",
                          "generator.vec_in_dim"}) {
    EXPECT_TRUE(latent.has(key)) << key;
    EXPECT_TRUE(pixel.has(key)) << key;
  }
}

// `make demo-long` is the demo with longer stages: only stage lengths and checkpointing, no other design.
TEST(ExperimentOverrides, DemoLongOnlyLengthensTheStages) {
  std::string name;
  auto ov = experiment_overrides(std::string(IOMM_SOURCE_DIR) + "/configs/world/demo-long.toml", &name);
  EXPECT_EQ(name, "demo-long");
  for (auto& o : ov) EXPECT_TRUE(o.rfind("pretrain:train.", 0) == 0 || o.rfind("finetune:train.", 0) == 0) << o;
  EXPECT_EQ(applied(ov, "pretrain").get_int("train.steps", 0), 2000);
  auto fine = applied(ov, "finetune");
  EXPECT_EQ(fine.get_int("train.steps", 0), 20000);
  // every kept checkpoint stays on disk for the curve
  EXPECT_GE(fine.get_int("train.keep_last", 0) * fine.get_int("train.checkpoint_every", 0), 20000);
}

TEST(ExperimentOverrides, RecipeAndMaskFilesSetWhatTheyName) {
  auto recipe = experiment_overrides(kExperiments + "/recipe-image-pair.toml");
  auto pre = applied(recipe, "pretrain"), fine = applied(recipe, "finetune");
  EXPECT_EQ(pre.get_string("train.data", ""), "image");
  EXPECT_EQ(fine.get_string("train.data", ""), "pair");
  auto mask = applied(experiment_overrides(kExperiments + "/mask-0.95.toml"), "model");
  EXPECT_DOUBLE_EQ(mask.get_double("conditioner.mask_ratio", -1), 0.95);
  auto raw = applied(experiment_overrides(kExperiments + "/adapter-raw.toml"), "model");
  EXPECT_EQ(raw.get_string("conditioner.mode", ""), "raw");
}

// Floats read back as the same floats and print short: the override lands in the run's log line.
TEST(ExperimentOverrides, FloatsAreShortAndStayFloats) {
  auto path = (fs::temp_directory_path() / "iomm_float_experiment.toml").string();
  std::ofstream(path) << "[model]\nconditioner.mask_ratio = 0.45\n[pretrain]\noptim.lr = 1.0\ntrain.steps = 3\n";
  auto ov = experiment_overrides(path);
  fs::remove(path);
  ASSERT_EQ(ov.size(), 3u);
  EXPECT_EQ(ov[0], "model:conditioner.mask_ratio=0.45");
  EXPECT_EQ(ov[1], "pretrain:optim.lr=1.0");
  EXPECT_EQ(ov[2], "pretrain:train.steps=3");
  auto pre = applied(ov, "pretrain");
  EXPECT_DOUBLE_EQ(pre.get_double("optim.lr", -1), 1.0);
  EXPECT_EQ(pre.get_int("train.steps", -1), 3);
}

TEST(ExperimentOverrides, AnUnknownTableNamesTheFileAndTheFix) {
  auto path = (fs::temp_directory_path() / "iomm_bad_experiment.toml").string();
  std::ofstream(path) << "name = \"bad\"\n[stage1]\ntrain.steps = 3\n";
  try {
    experiment_overrides(path);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("[stage1]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[pretrain]"), std::string::npos) << msg;
  }
  fs::remove(path);
}

// The label says what the stage trained on, with the trainer's defaults (by train.stage) when train.data is unset.
TEST(StageLabel, FollowsTrainData) {
  auto pretrain = Config::parse("[train]\nstage = \"pretrain\"\n");
  EXPECT_EQ(stage_label(1, pretrain), "stage 1 (image-only)");
  auto finetune = Config::parse("[train]\nstage = \"finetune\"\n");
  EXPECT_EQ(stage_label(2, finetune), "stage 2 (mix)");
  auto pairs = Config::parse("[train]\nstage = \"finetune\"\ndata = \"pair\"\n");
  EXPECT_EQ(stage_label(2, pairs), "stage 2 (pairs)");
  auto mix = Config::parse("[train]\nstage = \"pretrain\"\ndata = \"mix\"\n");
  EXPECT_EQ(stage_label(1, mix), "stage 1 (mix)");
  auto bad = Config::parse("[train]\nstage = \"pretrain\"\ndata = \"images\"\n");
  EXPECT_THROW(stage_label(1, bad), Error);
  // No stage: an error that lists the generator stages, never a silent default.
  auto none = Config::parse("[train]\ndata = \"mix\"\n");
  try {
    stage_label(1, none);
    ADD_FAILURE() << "no error without train.stage";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("pretrain"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("finetune"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace iomm
