// Training from a feature cache (issue #20): a generator stage whose data.images / data.pairs are `iomm cache`
// directories streams cached latents, c_img and input_ids through the same SampleStream (epochs, shuffle, workers,
// resumable position) and must give the per-step losses of the same run on the images; a cache of other weights
// or given to the memory loader is refused; a resumed run continues as an uninterrupted one.
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "apps/feature_cache_build.h"
#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/metrics.h"
#include "core/tensor_io.h"
#include "model/iomm_model.h"
#include "train/generator_trainer.h"
#include "testing/tiny_fixtures.h"
#include "testing/tiny_model_config.h"

using namespace iomm;
namespace fs = std::filesystem;

namespace {

// The tiny model over a tiny FLUX autoencoder (16 px, MIM 0.5), and caches of the tiny corpus made with it. Runs
// start from `init`: that model with its generator and adapter moved off their initialisation (adaLN-Zero would
// make the velocity ignore the condition, and then a wrong c_img or mask would not change the loss).
struct CachedWorld {
  std::string ae, model_toml, model_path, init, corpus, image_cache, pair_cache;
};

std::string perturbed_model(const std::string& toml) {
  auto cfg = Config::parse(toml);
  auto m = IommModel::create(IommModelConfig::from_config(cfg), 0);
  {
    torch::NoGradGuard ng;
    torch::manual_seed(7);
    for (auto& [name, p] : m.trainable()) p.add_(torch::randn_like(p) * 0.1);
  }
  auto dir = fixtures::temp_dir("cache_train_init");
  m.save(dir);
  return dir;
}

const CachedWorld& world() {
  static const CachedWorld w = [] {
    CachedWorld c;
    c.ae = fixtures::tiny_flux_ae_dir(1);
    c.model_toml = fixtures::tiny_flux_model_toml(c.ae);
    c.model_path = fixtures::temp_dir("cache_train_model") + "/model.toml";
    write_file_atomic(c.model_path, c.model_toml);
    c.init = perturbed_model(c.model_toml);
    c.corpus = fixtures::tiny_corpus_dir();
    for (auto [src, out] : {std::pair{"image", &c.image_cache}, std::pair{"captioned", &c.pair_cache}}) {
      CacheOptions o;
      o.model = {c.model_path};
      o.data = c.corpus + "/" + src;
      o.out = *out = fixtures::temp_dir(std::string("cache_") + src);
      o.batch_size = 8;
      build_feature_cache(o);
    }
    return c;
  }();
  return w;
}

// A few steps of the stream loader (shuffle buffer 16, two workers: the order is the stream's, not the files').
Config run_config(const std::string& data, const std::string& images, const std::string& pairs, int64_t steps,
                  const std::string& model_toml = world().model_toml) {
  return Config::parse(model_toml + fmt::format(R"(
[train]
stage = "finetune"
init_from = "{}"
data = "{}"
steps = {}
batch_size = 8
log_every = 1
cfg_drop = 0.2
threads = 1
[optim]
lr = 3e-3
warmup_steps = 2
[data]
images = "{}"
pairs = "{}"
loader = "stream"
shuffle_buffer = 16
workers = 2
)",
                                                world().init, data, steps, images, pairs));
}

std::vector<nlohmann::json> train(Config cfg, const std::string& tag) {
  auto run = fixtures::temp_dir(tag);
  train_generator(cfg, run, false);
  return read_jsonl(run + "/metrics.jsonl");
}

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(a), 1e-12); }

std::string error_of(Config cfg) {
  try {
    train_generator(cfg, fixtures::temp_dir("refused"), false);
  } catch (const Error& e) {
    if (std::getenv("IOMM_PRINT_ERRORS")) std::printf("[ message  ] %s\n", e.what());
    return e.what();
  }
  return "(no error)";
}

}  // namespace

// Image-only and mix data (text pairs, CFG dropout, MIM): every step's loss and per-kind loss agree to 1e-5
// relative, and the streams stand at the same position with the same skip counts.
TEST(GeneratorTrainerFeatureCache, StepsOnTheCacheHaveTheImagesLosses) {
  const auto& w = world();
  for (std::string data : {"image", "mix"}) {
    auto from_images = train(run_config(data, w.corpus + "/image", w.corpus + "/captioned", 4), "img-" + data);
    auto cached = run_config(data, w.image_cache, w.pair_cache, 4);
    cached.set("train.sample_every=4");  // the grids from a cache: decoded latents | reconstructions
    auto run = fixtures::temp_dir("cached-" + data);
    train_generator(cached, run, false);
    auto from_cache = read_jsonl(run + "/metrics.jsonl");
    ASSERT_EQ(from_images.size(), 4u);
    ASSERT_EQ(from_cache.size(), 4u);
    double worst = 0;
    for (size_t i = 0; i < 4; ++i) {
      for (const char* key : {"loss", "loss_image", "loss_text"}) {
        ASSERT_EQ(from_images[i].contains(key), from_cache[i].contains(key)) << data << " step " << i << " " << key;
        if (!from_images[i].contains(key)) continue;
        double r = rel(from_images[i][key].get<double>(), from_cache[i][key].get<double>());
        worst = std::max(worst, r);
        EXPECT_LE(r, 1e-5) << data << " step " << i + 1 << " " << key << ": " << from_images[i][key] << " vs "
                           << from_cache[i][key];
      }
      EXPECT_EQ(from_images[i]["data_skipped"], from_cache[i]["data_skipped"]) << data;
      EXPECT_EQ(from_images[i]["data_epoch"], from_cache[i]["data_epoch"]) << data;
    }
    if (data == "mix") EXPECT_TRUE(from_cache.back().contains("loss_text")) << from_cache.back().dump();
    std::printf("[ measured ] %s data: largest relative loss difference images vs cache over 4 steps: %.3g\n",
                data.c_str(), worst);
    EXPECT_TRUE(fs::exists(run + "/samples/step-00000004-recon.png"));
  }
}

// A cache made with other autoencoder weights is refused at start, naming the key, what differs and the fix; so is
// a cache given to the memory loader, and a cache beside images.
TEST(GeneratorTrainerFeatureCache, RefusesACacheOfOtherWeightsOrLoaders) {
  const auto& w = world();
  auto other = fixtures::tiny_flux_model_toml(fixtures::tiny_flux_ae_dir(1, 1e-3));
  auto e = error_of(run_config("image", w.image_cache, "", 2, other));
  EXPECT_NE(e.find("data.images"), std::string::npos) << e;
  EXPECT_NE(e.find("autoencoder fingerprint"), std::string::npos) << e;
  EXPECT_NE(e.find("iomm cache"), std::string::npos) << e;
  EXPECT_EQ(e.find("resolution"), std::string::npos) << e;

  auto memory = run_config("image", w.image_cache, "", 2);
  memory.set("data.loader=\"memory\"");
  e = error_of(memory);
  EXPECT_NE(e.find("data.loader"), std::string::npos) << e;
  EXPECT_NE(e.find("stream"), std::string::npos) << e;

  e = error_of(run_config("mix", w.image_cache, w.corpus + "/captioned", 2));
  EXPECT_NE(e.find("data.pairs"), std::string::npos) << e;
  EXPECT_NE(e.find("iomm cache --model M --data"), std::string::npos) << e;
}

// Stopped after 3 of 6 steps and resumed, a run on the cache has the uninterrupted run's losses and weights.
TEST(GeneratorTrainerFeatureCache, ResumedRunContinuesWithTheUninterruptedLosses) {
  const auto& w = world();
  auto straight = train(run_config("mix", w.image_cache, w.pair_cache, 6), "cache-straight");
  auto resumed = fixtures::temp_dir("cache-resumed");
  auto first = run_config("mix", w.image_cache, w.pair_cache, 6);
  first.set("train.stop_at=3");
  EXPECT_EQ(train_generator(first, resumed, false).steps, 3);
  auto second = run_config("mix", w.image_cache, w.pair_cache, 6);
  train_generator(second, resumed, true);
  auto rows = read_jsonl(resumed + "/metrics.jsonl");
  ASSERT_EQ(rows.size(), 6u);
  ASSERT_EQ(straight.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(straight[i]["loss"], rows[i]["loss"]) << "step " << i + 1;
  auto st = nlohmann::json::parse(read_file(resumed + "/checkpoints/step-00000003/state.json"))["state"]["data"];
  EXPECT_EQ(st["images"]["index"].get<int64_t>() + st["pairs"]["index"].get<int64_t>(), 24) << st.dump();
}

// A cache cut by --limit trains, and the run's log says it is partial.
TEST(GeneratorTrainerFeatureCache, APartialCacheTrainsWithAWarning) {
  const auto& w = world();
  CacheOptions o;
  o.model = {w.model_path};
  o.data = w.corpus + "/image";
  o.out = fixtures::temp_dir("cache_partial");
  o.limit = 20;
  build_feature_cache(o);
  auto run = fixtures::temp_dir("cache-partial-run");
  auto cfg = run_config("image", o.out, "", 2);
  EXPECT_EQ(train_generator(cfg, run, false).steps, 2);
  auto log = read_file(run + "/log.txt");
  EXPECT_NE(log.find("is partial (made with --limit): 1 of its input's 2 units, 20 samples"), std::string::npos)
      << log;
}

// A run started on the images resumes on their (complete, undamaged) cache at the same stream position: the
// saved position records seed, shuffle buffer, world size and unit count, which both share.
TEST(GeneratorTrainerFeatureCache, ARunOnTheImagesResumesOnTheirCache) {
  const auto& w = world();
  auto straight = train(run_config("mix", w.corpus + "/image", w.corpus + "/captioned", 6), "images-straight");
  auto switched = fixtures::temp_dir("switched");
  auto first = run_config("mix", w.corpus + "/image", w.corpus + "/captioned", 6);
  first.set("train.stop_at=3");
  train_generator(first, switched, false);
  auto second = run_config("mix", w.image_cache, w.pair_cache, 6);
  train_generator(second, switched, true);
  auto rows = read_jsonl(switched + "/metrics.jsonl");
  ASSERT_EQ(rows.size(), 6u);
  for (size_t i = 3; i < 6; ++i)
    EXPECT_LE(rel(straight[i]["loss"].get<double>(), rows[i]["loss"].get<double>()), 1e-5) << "step " << i + 1;
}
