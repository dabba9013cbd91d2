// iomm bench on the tiny model: the JSON fields the docs and the peer read, a positive FLOP count that matches
// model/flops.h, and a dump that replays. No timing is asserted (timings are for benchmarks, not tests).
#include "apps/bench.h"

#include <cmath>
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/config.h"
#include "core/fs.h"
#include "core/tensor_io.h"
#include "testing/tiny_fixtures.h"
#include "testing/tiny_model_config.h"

using namespace iomm;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

Config tiny_train_config() {
  return Config::parse(fixtures::tiny_model_toml() + R"(
[train]
stage = "finetune"
data = "mix"
batch_size = 8
mix_ratio = 0.6
cfg_drop = 0.2
ema_decay = 0.9
threads = 1
[optim]
lr = 1e-3
warmup_steps = 5
[sample]
prompts = ["a red circle", "two blue squares"]
)");
}

BenchOptions quick(const std::string& dump = "") {
  BenchOptions o;
  o.warmup = 1;
  o.steps = 2;
  o.dump = dump;
  return o;
}

void expect_common_fields(const json& r) {
  for (auto k : {"impl", "kind", "device", "threads", "warmup", "steps", "times", "step_seconds", "peak_memory_bytes",
                 "memory_kind", "flops_per_step", "achieved_tflops", "mfu", "peak_tflops"})
    EXPECT_TRUE(r.contains(k)) << k << " in " << r.dump();
  for (auto k : {"median", "min", "max", "mean", "p10", "p90"}) EXPECT_TRUE(r["step_seconds"].contains(k)) << k;
  EXPECT_EQ(r["times"].size(), 2u);
  EXPECT_LE(r["step_seconds"]["min"].get<double>(), r["step_seconds"]["median"].get<double>());
  EXPECT_LE(r["step_seconds"]["median"].get<double>(), r["step_seconds"]["max"].get<double>());
  EXPECT_GT(r["peak_memory_bytes"].get<double>(), 0);
  EXPECT_TRUE(r["mfu"].is_null());  // CPU: no MFU against a GPU peak
}

}  // namespace

TEST(Bench, TrainReportsTheFieldsAndAPositiveFlopCount) {
  auto dir = fixtures::temp_dir("bench_train");
  auto cfg = tiny_train_config();
  auto r = bench_train(cfg, quick(dir));
  expect_common_fields(r);
  EXPECT_EQ(r["kind"], "train");
  EXPECT_EQ(r["batch_size"], 8);
  EXPECT_EQ(r["threads"], 1);  // train.threads
  double total = r["flops_per_step"];
  EXPECT_GT(total, 0);
  double parts = 0;
  for (auto& [k, v] : r["flops"].items()) parts += v.get<double>();
  EXPECT_NEAR(parts / total, 1.0, 1e-12);
  EXPECT_GT(r["flops"]["generator"].get<double>(), 0);
  EXPECT_GT(r["samples_per_s"].get<double>(), 0);
  ASSERT_EQ(r["losses"].size(), 3u);  // warm-up included
  for (auto& l : r["losses"]) EXPECT_TRUE(std::isfinite(l.get<double>()));
  // AdamW on one fixed batch: the loss falls.
  EXPECT_LT(r["losses"][2].get<double>(), r["losses"][0].get<double>());

  // The dump: the model at step 0, the batch with every draw, the settings, and the result.
  for (auto f : {"model/iomm.toml", "model/rqa.safetensors", "generator-diffusers/config.json", "batch.json",
                 "batch.safetensors", "bench.json"})
    EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;
  auto batch = load_tensors(dir + "/batch.safetensors");
  auto spec = json::parse(read_file(dir + "/batch.json"));
  std::map<std::string, int64_t> kinds;
  for (auto& c : spec["conditions"]) ++kinds[c["kind"].get<std::string>()];
  EXPECT_GT(kinds["text"], 0);  // every kind of condition reaches the peer's check
  EXPECT_GT(kinds["uncond"], 0);
  int64_t images = kinds["image"];
  ASSERT_GT(images, 0);
  EXPECT_EQ(batch.at("keep").size(0), images);
  EXPECT_EQ(batch.at("input_ids").size(0), 8);
  EXPECT_EQ(batch.at("noise").sizes(), (std::vector<int64_t>{8, 16, 48}));
  EXPECT_EQ(spec["optim"]["lr"], 1e-3);
  EXPECT_EQ(json::parse(read_file(dir + "/bench.json"))["losses"], r["losses"]);
}

TEST(Bench, TrainIsReproducibleAndPerturbedWeightsMatter) {
  auto cfg = tiny_train_config();
  auto a = bench_train(cfg, quick());
  cfg = tiny_train_config();
  auto b = bench_train(cfg, quick());
  EXPECT_EQ(a["losses"], b["losses"]);  // same batch, same weights, same updates
  cfg = tiny_train_config();
  auto o = quick();
  o.perturb = false;  // adaLN-Zero: the generator starts as the zero map, a different loss
  EXPECT_NE(bench_train(cfg, o)["first_loss"], a["first_loss"]);
}

TEST(Bench, TrainRejectsUnknownKeys) {
  auto cfg = tiny_train_config();
  cfg.set("train.bach_size=3");
  EXPECT_THROW(bench_train(cfg, quick()), std::exception);
}

TEST(Bench, GenerateReportsImagesPerSecondAndDumpsTheImages) {
  auto dir = fixtures::temp_dir("bench_generate");
  auto cfg = tiny_train_config();
  GenerateBenchOptions g;
  g.images = 3;
  g.steps = 2;
  auto r = bench_generate(cfg, quick(dir), g);
  expect_common_fields(r);
  EXPECT_EQ(r["kind"], "generate");
  EXPECT_GT(r["images_per_s"].get<double>(), 0);
  EXPECT_GT(r["flops_per_step"].get<double>(), 0);
  auto images = load_tensors(dir + "/generate.safetensors").at("images");
  EXPECT_EQ(images.sizes(), (std::vector<int64_t>{3, 3, 16, 16}));
  auto spec = json::parse(read_file(dir + "/generate.json"));
  EXPECT_EQ(spec["prompts"], json({"a red circle", "two blue squares", "a red circle"}));
  EXPECT_GT(images.abs().max().item<float>(), 0);  // perturbed weights: not the zero map's image
}

TEST(Bench, ComponentTimesForwardAndBackward) {
  auto dir = fixtures::temp_dir("bench_component");
  auto cfg = tiny_train_config();
  bench_train(cfg, quick(dir));
  ForwardOptions fo;
  fo.model_dir = dir + "/model/generator";
  torch::manual_seed(0);
  TensorMap in = {{"hidden_states", torch::randn({2, 16, 48})}, {"encoder_hidden_states", torch::randn({2, 4, 32})},
                  {"timestep", torch::rand({2})},          {"img_ids", torch::zeros({16, 3})},
                  {"txt_ids", torch::zeros({4, 3})}};
  auto f = bench_component("mmdit", fo, in, false, quick());
  expect_common_fields(f);
  EXPECT_EQ(f["kind"], "component-forward");
  EXPECT_GT(f["calls_per_s"].get<double>(), 0);
  auto b = bench_component("mmdit", fo, in, true, quick());
  EXPECT_EQ(b["kind"], "component-forward-backward");
  in.erase("timestep");
  EXPECT_THROW(bench_component("mmdit", fo, in, false, quick()), std::exception);  // names the missing input
}

TEST(Bench, ActivationCheckpointingKeepsTheLosses) {
  auto cfg = tiny_train_config();
  auto plain = bench_train(cfg, quick());
  cfg = tiny_train_config();
  cfg.set("train.activation_checkpointing=1");
  auto ck = bench_train(cfg, quick());
  EXPECT_EQ(ck["activation_checkpointing"], 1);
  ASSERT_EQ(ck["losses"].size(), plain["losses"].size());
  for (size_t i = 0; i < plain["losses"].size(); ++i)  // three AdamW steps on recomputed activations
    EXPECT_NEAR(ck["losses"][i].get<double>(), plain["losses"][i].get<double>(),
                1e-6 * std::abs(plain["losses"][i].get<double>()));
}
