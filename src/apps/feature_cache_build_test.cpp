// The feature cache against the objective: a loss through cached features (latents, c_img, input_ids) equals the
// loss through the images with the same generator draws, straight from the model and end to end through
// `iomm cache`'s shards; a cache of other weights or another resolution is refused naming what differs.
#include "apps/feature_cache_build.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/tensor_io.h"
#include "data/feature_cache.h"
#include "data/image_pool.h"
#include "model/features.h"
#include "model/iomm_model.h"
#include "models/autoencoder.h"
#include "models/weights.h"
#include "testing/tiny_fixtures.h"
#include "testing/tiny_model_config.h"

using namespace iomm;
namespace fs = std::filesystem;

namespace {

std::string tiny_flux_ae(uint64_t seed, double perturb = 0) { return fixtures::tiny_flux_ae_dir(seed, perturb); }

std::string model_toml(const std::string& ae_dir, int64_t resolution = 16) {
  return fixtures::tiny_flux_model_toml(ae_dir, resolution);
}

IommModel model_from(const std::string& toml, uint64_t seed = 0) {
  auto cfg = Config::parse(toml);
  auto m = IommModel::create(IommModelConfig::from_config(cfg), seed);
  torch::NoGradGuard ng;  // leave adaLN-Zero so the velocity depends on the condition and the latents
  for (auto& [name, p] : m.trainable()) p.add_(torch::randn_like(p) * 0.3);
  return m;
}

std::string write_toml(const std::string& toml) {
  auto path = fixtures::temp_dir("cache_cfg") + "/model.toml";
  std::ofstream(path) << toml;
  return path;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

FlowLoss loss_with(IommModel& m, const TrainingBatch& b, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return m.loss(b, TimestepSampling{}, gen);
}

const std::vector<ConditionKind> kKinds = {ConditionKind::image, ConditionKind::text, ConditionKind::image,
                                           ConditionKind::uncond, ConditionKind::text};

}  // namespace

TEST(FeatureCacheModel, LossFromFeaturesEqualsLossFromImages) {
  auto m = model_from(model_toml(tiny_flux_ae(1)));
  torch::manual_seed(5);
  auto images = torch::rand({5, 3, 16, 16}) * 2 - 1;
  std::vector<std::string> captions = {"", "two red circles", "", "", "a blue square left of a green star"};
  TrainingBatch from_images{images, {}};
  for (size_t i = 0; i < kKinds.size(); ++i)
    from_images.conds.push_back({kKinds[i], captions[i], kKinds[i] == ConditionKind::image ? images[int64_t(i)]
                                                                                             : at::Tensor()});
  auto f = m.encode_features(images);
  EXPECT_EQ(f.latents.sizes().vec(), (std::vector<int64_t>{5, 16, 8, 8}));
  EXPECT_EQ(f.c_img.sizes().vec(), (std::vector<int64_t>{5, 4, 32}));
  std::vector<data::FeatureSample> samples;
  const auto& cond = m.conditioner();
  for (int64_t i = 0; i < 5; ++i) {
    data::FeatureSample s{std::to_string(i), f.latents[i], f.c_img[i], {}, captions[size_t(i)]};
    bool cut = false;
    s.input_ids = caption_input_ids(captions[size_t(i)], cond.config.templates, cond.tokenizer, 4, cut);
    samples.push_back(s);
  }
  auto a = loss_with(m, from_images, 11), b = loss_with(m, training_batch_from_features(samples, kKinds), 11);
  EXPECT_LE(max_diff(a.per_sample, b.per_sample), 1e-5) << a.per_sample << b.per_sample;
  // Mixed: cached latents, one image condition from its cached tokens, the other from its image.
  TrainingBatch mixed = from_images;
  mixed.latents = f.latents;
  mixed.conds[2].image = at::Tensor();
  mixed.conds[2].image_tokens = f.c_img[2];
  EXPECT_LE(max_diff(a.per_sample, loss_with(m, mixed, 11).per_sample), 1e-5);
  // The comparison has teeth: another draw (other masks, t, z) gives another loss, and so do other image tokens
  // (scaled by half: masking before caching would zero some).
  EXPECT_GT(max_diff(a.per_sample, loss_with(m, from_images, 12).per_sample), 1e-3);
  auto masked = samples;
  for (int64_t i : {0, 2}) masked[size_t(i)].c_img = f.c_img[i] * 0.5;
  auto c = loss_with(m, training_batch_from_features(masked, kKinds), 11);
  EXPECT_GT((a.per_sample - c.per_sample).abs().index({torch::tensor({0, 2})}).min().item<double>(), 1e-4)
      << a.per_sample << c.per_sample;
}

TEST(FeatureCacheBuild, CachedShardsGiveTheImagesLossAndRefuseOtherModels) {
  auto ae = tiny_flux_ae(1);
  auto toml = model_toml(ae);
  auto data_dir = fixtures::tiny_corpus_dir() + "/captioned";
  CacheOptions o;
  o.model = {write_toml(toml)};
  o.data = data_dir;
  o.out = fixtures::temp_dir("cache_out");
  o.batch_size = 8;
  o.limit = 40;  // one whole shard of 32 and a partial one
  auto r = build_feature_cache(o);
  EXPECT_EQ(r.manifest.samples, 40);
  EXPECT_EQ(r.manifest.captions, 40);
  ASSERT_EQ(r.manifest.shards.size(), 2u);
  EXPECT_TRUE(r.manifest.shards[1].partial);

  auto cache = data::FeatureCache::open(o.out);
  auto m = model_from(toml);
  cache.validate(m.feature_fingerprints());
  data::FeatureCacheReader reader(cache);
  std::vector<data::FeatureSample> samples;
  data::FeatureSample s;
  while (reader.next(s)) samples.push_back(s);
  ASSERT_EQ(samples.size(), 40u);

  // The same images through the training pool's preprocessing; five of them through both paths.
  auto pool = data::load_image_pool(data_dir, 16, true, 40, false);
  std::vector<int64_t> idx = {0, 3, 17, 33, 39};
  std::vector<data::FeatureSample> picked;
  TrainingBatch from_images{pool.batch(idx), {}};
  for (size_t i = 0; i < idx.size(); ++i) {
    const auto& c = samples[size_t(idx[i])];
    ASSERT_EQ(c.key, pool.keys[size_t(idx[i])]);
    ASSERT_EQ(c.caption.value_or(""), pool.captions[size_t(idx[i])]);
    picked.push_back(c);
    from_images.conds.push_back({kKinds[i], pool.captions[size_t(idx[i])],
                                 kKinds[i] == ConditionKind::image ? from_images.images[int64_t(i)] : at::Tensor()});
  }
  auto a = loss_with(m, from_images, 3), b = loss_with(m, training_batch_from_features(picked, kKinds), 3);
  EXPECT_LE(max_diff(a.per_sample, b.per_sample), 1e-5) << a.per_sample << b.per_sample;

  // Other autoencoder weights (one encoder weight moved) or another resolution: refused, naming what differs.
  auto other = model_from(model_toml(tiny_flux_ae(1, 1e-3)));
  try {
    cache.validate(other.feature_fingerprints());
    ADD_FAILURE() << "a cache of other autoencoder weights was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("autoencoder fingerprint"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("resolution"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("iomm cache"), std::string::npos) << e.what();
  }
  auto bigger = model_from(model_toml(ae, 32));
  try {
    cache.validate(bigger.feature_fingerprints());
    ADD_FAILURE() << "a cache of another resolution was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("resolution 16 (this run: 32)"), std::string::npos) << e.what();
  }
}
