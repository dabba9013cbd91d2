#include "train/checkpoint.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/safetensors.h"
#include "train/determinism.h"
#include "train/optimizer.h"

using namespace iomm;
namespace fs = std::filesystem;

namespace {

fs::path fresh_run(const std::string& tag) {
  auto d = fs::temp_directory_path() / ("iomm_ckpt_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::vector<std::string> dir_names(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory()) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TrainCheckpoint small_checkpoint(int64_t step, float value = 1.0f) {
  TrainCheckpoint ck;
  ck.step = step;
  ck.files["model"] = {{"w", torch::full({3, 2}, value)}, {"ids", torch::arange(5, torch::kLong)}};
  ck.files["optimizer"] = {{"w.exp_avg", torch::full({3, 2}, value / 2)}};
  ck.state = {{"data_cursor", 42 + step}};
  return ck;
}

// ---- the product's training loop in miniature: MLP, AdamW, EMA, data and dropout randomness ----

struct Mlp : torch::nn::Module {
  torch::nn::Linear l1{nullptr}, l2{nullptr};
  Mlp() {
    l1 = register_module("l1", torch::nn::Linear(8, 16));
    l2 = register_module("l2", torch::nn::Linear(16, 4));
  }
};

OptimConfig test_optim(int64_t total) {
  OptimConfig c;
  c.lr = 1e-2;
  c.weight_decay = 0.01;
  c.grad_clip = 0.5;  // small enough to clip, so the clipping path is part of what must resume exactly
  c.warmup_steps = 2;
  c.schedule = "cosine";
  c.total_steps = total;
  return c;
}

struct MiniTrainer {
  std::shared_ptr<Mlp> model;
  NamedTensors params;
  std::unique_ptr<Optimizer> opt;
  std::unique_ptr<Ema> ema;
  at::Generator data;
  int64_t step = 0;

  // init_seed seeds the global generator (weight init, dropout); data_seed the data generator.
  MiniTrainer(uint64_t init_seed, uint64_t data_seed, int64_t total) {
    torch::manual_seed(init_seed);
    model = std::make_shared<Mlp>();
    params = trainable_parameters(*model);
    opt = std::make_unique<Optimizer>(params, test_optim(total));
    ema = std::make_unique<Ema>(params, 0.9);
    data = at::make_generator<at::CPUGeneratorImpl>(data_seed);
  }

  void train(int n) {
    for (int i = 0; i < n; ++i, ++step) {
      auto x = at::randn({16, 8}, data);
      auto y = at::randn({16, 4}, data);
      auto h = torch::gelu(model->l1->forward(x));
      h = h * at::empty_like(h).bernoulli_(0.8, data) / 0.8;  // a MIM-like mask from the data generator
      h = torch::dropout(h, 0.1, /*train=*/true);             // dropout draws from the global generator
      auto loss = (model->l2->forward(h) - y).pow(2).mean();
      loss.backward();
      opt->step(step);
      ema->update(params);
    }
  }

  TrainCheckpoint checkpoint() const {
    TrainCheckpoint ck;
    ck.step = step;
    for (const auto& [name, p] : params) ck.files["model"][name] = p;
    ck.files["ema"] = ema->tensors();
    ck.files["optimizer"] = opt->state();
    ck.files["rng"] = {{"data", generator_state(data)},
                       {"torch_cpu", generator_state(at::detail::getDefaultCPUGenerator())}};
    ck.state = {{"step", step}, {"determinism", determinism_fingerprint()}};
    return ck;
  }

  void restore(const TrainCheckpoint& ck, bool restore_data_rng = true) {
    torch::NoGradGuard no_grad;
    const auto& model_t = ck.files.at("model");
    for (auto& [name, p] : params) p.copy_(model_t.at(name));
    ema->load(ck.files.at("ema"), "ema.safetensors");
    opt->load_state(ck.files.at("optimizer"), "optimizer.safetensors");
    if (restore_data_rng) set_generator_state(data, ck.files.at("rng").at("data"), "rng.safetensors data");
    at::Generator global = at::detail::getDefaultCPUGenerator();
    set_generator_state(global, ck.files.at("rng").at("torch_cpu"), "rng.safetensors torch_cpu");
    step = ck.state.at("step").get<int64_t>();
  }
};

void expect_same_training_state(const MiniTrainer& a, const MiniTrainer& b, bool want_equal) {
  bool all_equal = true;
  for (size_t i = 0; i < a.params.size(); ++i) all_equal &= torch::equal(a.params[i].second, b.params[i].second);
  for (const auto& [name, t] : a.ema->tensors()) all_equal &= torch::equal(t, b.ema->tensors().at(name));
  auto sa = a.opt->state(), sb = b.opt->state();
  for (const auto& [name, t] : sa) all_equal &= torch::equal(t, sb.at(name));
  all_equal &= torch::equal(generator_state(a.data), generator_state(b.data));
  EXPECT_EQ(all_equal, want_equal);
}

}  // namespace

TEST(Checkpoint, ResumeIsBitExact) {
  constexpr int N = 5;
  set_deterministic(true);
  auto run = fresh_run("resume");

  MiniTrainer straight(0, 7, 2 * N);
  straight.train(2 * N);
  auto straight_global = generator_state(at::detail::getDefaultCPUGenerator());

  MiniTrainer first(0, 7, 2 * N);
  first.train(N);
  save_checkpoint(run.string(), first.checkpoint());

  // Fresh objects with other seeds: everything that matters must come from the checkpoint.
  MiniTrainer resumed(123, 456, 2 * N);
  auto latest = latest_checkpoint(run.string());
  ASSERT_TRUE(latest.has_value());
  auto ck = load_checkpoint(*latest);
  EXPECT_EQ(ck.step, N);
  EXPECT_TRUE(determinism_mismatches(ck.state.at("determinism")).empty());
  resumed.restore(ck);
  resumed.train(N);
  expect_same_training_state(straight, resumed, /*want_equal=*/true);
  EXPECT_TRUE(torch::equal(straight_global, generator_state(at::detail::getDefaultCPUGenerator())));

  // The comparison is sensitive: a resume that forgets the data generator's state diverges.
  MiniTrainer forgetful(123, 456, 2 * N);
  forgetful.restore(ck, /*restore_data_rng=*/false);
  forgetful.train(N);
  expect_same_training_state(straight, forgetful, /*want_equal=*/false);
  set_deterministic(false);
}

TEST(Checkpoint, SaveWritesLayoutLatestAndStepMetadata) {
  auto run = fresh_run("layout");
  auto path = save_checkpoint(run.string(), small_checkpoint(7));
  fs::path dir = run / "checkpoints" / "step-00000007";
  EXPECT_EQ(path, dir.string());
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "state.json", "COMPLETE"})
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  EXPECT_EQ(read_file((run / "checkpoints" / "latest").string()), "step-00000007\n");
  EXPECT_EQ(dir_names(run / "checkpoints"), std::vector<std::string>{"step-00000007"});  // no temp dir remains
  EXPECT_EQ(safetensors::Checkpoint((dir / "model.safetensors").string()).metadata().at("step"), "7");

  auto ck = load_checkpoint(path);
  EXPECT_EQ(ck.step, 7);
  EXPECT_TRUE(torch::equal(ck.files.at("model").at("ids"), torch::arange(5, torch::kLong)));
  EXPECT_TRUE(torch::equal(ck.files.at("optimizer").at("w.exp_avg"), torch::full({3, 2}, 0.5f)));
  EXPECT_EQ(ck.state.at("data_cursor"), 49);
  EXPECT_EQ(latest_checkpoint(run.string()), path);
}

TEST(Checkpoint, PruneKeepsExactlyKeepLastAndLatestIsNewest) {
  auto run = fresh_run("prune");
  for (int64_t s = 1; s <= 5; ++s) {
    save_checkpoint(run.string(), small_checkpoint(s * 10), /*keep_last=*/2);
    EXPECT_EQ(dir_names(run / "checkpoints").size(), std::min<size_t>(s, 2));
  }
  EXPECT_EQ(dir_names(run / "checkpoints"), (std::vector<std::string>{"step-00000040", "step-00000050"}));
  EXPECT_EQ(read_file((run / "checkpoints" / "latest").string()), "step-00000050\n");
  EXPECT_EQ(latest_checkpoint(run.string()), (run / "checkpoints" / "step-00000050").string());

  auto all = fresh_run("prune_all");
  for (int64_t s = 1; s <= 3; ++s) save_checkpoint(all.string(), small_checkpoint(s), /*keep_last=*/0);
  EXPECT_EQ(dir_names(all / "checkpoints").size(), 3u);
}

// Issue 17: keep_last = 2 needed room for three checkpoints at a save (the oldest went only after the new one was
// complete). Now the one the save replaces goes first; the newest complete one stays even when the save fails.
TEST(Checkpoint, KeepLastTwoNeverHoldsThreeAndAFailedSaveKeepsTheNewest) {
  auto run = fresh_run("peak");
  save_checkpoint(run.string(), small_checkpoint(10), 2);
  save_checkpoint(run.string(), small_checkpoint(20), 2);
  auto bad = small_checkpoint(30);  // fails midway, after model.safetensors, while step 30 would be the third
  bad.files["optimizer"]["undefined"] = at::Tensor();
  EXPECT_THROW(save_checkpoint(run.string(), bad, 2), Error);
  EXPECT_EQ(dir_names(run / "checkpoints"), std::vector<std::string>{"step-00000020"});
  EXPECT_EQ(latest_checkpoint(run.string()), (run / "checkpoints" / "step-00000020").string());
  EXPECT_NO_THROW(load_checkpoint((run / "checkpoints" / "step-00000020").string()));
  // keep_last = 1 cannot delete first (it would delete the only checkpoint): the old one stays until the new one is
  // complete.
  auto one = fresh_run("peak1");
  save_checkpoint(one.string(), small_checkpoint(1), 1);
  auto bad1 = small_checkpoint(2);
  bad1.files["optimizer"]["undefined"] = at::Tensor();
  EXPECT_THROW(save_checkpoint(one.string(), bad1, 1), Error);
  EXPECT_EQ(dir_names(one / "checkpoints"), std::vector<std::string>{"step-00000001"});
}

// The log line before the first save, and an early failure when not even one checkpoint fits.
TEST(Checkpoint, SpaceCheckNamesWhatIsNeededAndFailsWhenOneCannotFit) {
  auto run = fresh_run("space");
  EXPECT_EQ(check_checkpoint_space(run.string(), 1000, 2, 10), 2000u);
  EXPECT_EQ(check_checkpoint_space(run.string(), 1000, 1, 10), 2000u);
  EXPECT_EQ(check_checkpoint_space(run.string(), 1000, 0, 10), 10000u);  // every save kept
  EXPECT_EQ(check_checkpoint_space(run.string(), 1000, 5, 1), 1000u);     // one save left: one checkpoint
  const std::string e = error_of([&] { check_checkpoint_space(run.string(), uint64_t(1) << 62, 2, 3); });
  EXPECT_NE(e.find((run / "checkpoints").string()), std::string::npos) << e;
  EXPECT_NE(e.find("free"), std::string::npos) << e;
  EXPECT_NE(e.find("one checkpoint needs about"), std::string::npos) << e;
}

TEST(Checkpoint, LatestIgnoresTempAndIncompleteDirs) {
  auto run = fresh_run("ignore");
  EXPECT_FALSE(latest_checkpoint(run.string()).has_value());  // no checkpoints dir yet
  auto good = save_checkpoint(run.string(), small_checkpoint(3));
  fs::path ckdir = run / "checkpoints";

  // A save killed just before its rename: complete contents, still a temp dir.
  fs::copy(good, ckdir / "step-00000009.tmp", fs::copy_options::recursive);
  // A copy that stopped before COMPLETE arrived.
  fs::copy(good, ckdir / "step-00000010", fs::copy_options::recursive);
  fs::remove(ckdir / "step-00000010" / "COMPLETE");
  EXPECT_EQ(latest_checkpoint(run.string()), good);

  // `latest` lagging behind (killed between the rename and the pointer update): the newest complete dir wins.
  fs::copy(good, ckdir / "step-00000004", fs::copy_options::recursive);
  EXPECT_EQ(latest_checkpoint(run.string()), (ckdir / "step-00000004").string());
  fs::remove_all(ckdir / "step-00000004");

  // The next save deletes the leftover temp dir and leaves the incomplete dir (not ours) alone.
  auto next = save_checkpoint(run.string(), small_checkpoint(5), /*keep_last=*/0);
  EXPECT_EQ(dir_names(ckdir), (std::vector<std::string>{"step-00000003", "step-00000005", "step-00000010"}));
  EXPECT_EQ(latest_checkpoint(run.string()), next);
}

TEST(Checkpoint, InterruptedSaveNeverBecomesLatest) {
  auto run = fresh_run("interrupted");
  auto good = save_checkpoint(run.string(), small_checkpoint(1));
  // Fails after model.safetensors is written ("model" sorts before "optimizer"), like a crash midway.
  auto bad = small_checkpoint(2);
  bad.files["optimizer"]["undefined"] = at::Tensor();
  EXPECT_THROW(save_checkpoint(run.string(), bad), Error);
  EXPECT_EQ(dir_names(run / "checkpoints"), std::vector<std::string>{"step-00000001"});
  EXPECT_EQ(read_file((run / "checkpoints" / "latest").string()), "step-00000001\n");
  EXPECT_EQ(latest_checkpoint(run.string()), good);
}

TEST(Checkpoint, ResavingAStepReplacesItAndEarlierStepSupersedesNewer) {
  auto run = fresh_run("resave");
  fs::path ckdir = run / "checkpoints";
  save_checkpoint(run.string(), small_checkpoint(5, 1.0f));
  auto again = save_checkpoint(run.string(), small_checkpoint(5, 2.0f));
  EXPECT_TRUE(torch::equal(load_checkpoint(again).files.at("model").at("w"), torch::full({3, 2}, 2.0f)));
  EXPECT_EQ(dir_names(ckdir), std::vector<std::string>{"step-00000005"});

  // A run resumed from step 5 after step 9 was saved: step 9 must not be resumed from again, nor lost.
  save_checkpoint(run.string(), small_checkpoint(9));
  auto redo = save_checkpoint(run.string(), small_checkpoint(6), /*keep_last=*/0);
  EXPECT_EQ(latest_checkpoint(run.string()), redo);
  auto names = dir_names(ckdir);
  ASSERT_EQ(names.size(), 3u);
  EXPECT_EQ(names[0], "step-00000005");
  EXPECT_EQ(names[1], "step-00000006");
  EXPECT_EQ(names[2].rfind("step-00000009.superseded-", 0), 0u) << names[2];
}

TEST(Checkpoint, CorruptOrMissingFilesNameTheFile) {
  auto saved = [](const std::string& tag) {
    auto run = fresh_run("corrupt_" + tag);
    return fs::path(save_checkpoint(run.string(), small_checkpoint(2)));
  };
  auto load = [](const fs::path& d) { return [d] { load_checkpoint(d.string()); }; };

  auto d = saved("truncated");
  fs::resize_file(d / "optimizer.safetensors", fs::file_size(d / "optimizer.safetensors") / 2);
  auto msg = error_of(load(d));
  EXPECT_NE(msg.find("optimizer.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;

  d = saved("garbled");  // same size, broken header
  {
    std::fstream f(d / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(8);
    f.write("XXXXXXXX", 8);
  }
  msg = error_of(load(d));
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;

  d = saved("mixed");  // a file from another save of the same shapes
  auto other = fresh_run("corrupt_mixed_other");
  auto other_dir = fs::path(save_checkpoint(other.string(), small_checkpoint(3)));
  fs::copy_file(other_dir / "model.safetensors", d / "model.safetensors", fs::copy_options::overwrite_existing);
  msg = error_of(load(d));
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("different saves"), std::string::npos) << msg;

  d = saved("no_state");
  fs::remove(d / "state.json");
  msg = error_of(load(d));
  EXPECT_NE(msg.find("state.json"), std::string::npos) << msg;

  d = saved("bad_state");
  std::ofstream(d / "state.json") << "{\"format\": \"iomm-train-checkpoint\", \"step\": 2}";  // size no longer matches
  msg = error_of(load(d));
  EXPECT_NE(msg.find("state.json"), std::string::npos) << msg;

  d = saved("no_complete");
  fs::remove(d / "COMPLETE");
  msg = error_of(load(d));
  EXPECT_NE(msg.find("COMPLETE"), std::string::npos) << msg;
  EXPECT_NE(msg.find("never finished"), std::string::npos) << msg;

  d = saved("bad_complete");
  std::ofstream(d / "COMPLETE") << "{not json";
  msg = error_of(load(d));
  EXPECT_NE(msg.find("COMPLETE"), std::string::npos) << msg;
}

TEST(Checkpoint, GeneratorStateRoundTrip) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(5);
  at::randn({3}, g);  // leaves a cached normal sample, which the state must carry
  auto state = generator_state(g);
  auto a = at::randn({7}, g);
  auto b = at::empty({9}).bernoulli_(0.5, g);

  auto other = at::make_generator<at::CPUGeneratorImpl>(99);
  set_generator_state(other, state.clone());
  EXPECT_TRUE(torch::equal(at::randn({7}, other), a));
  EXPECT_TRUE(torch::equal(at::empty({9}).bernoulli_(0.5, other), b));

  auto msg = error_of([&] { set_generator_state(other, torch::zeros({3}, torch::kByte), "rng.safetensors data"); });
  EXPECT_NE(msg.find("rng.safetensors data"), std::string::npos) << msg;

  if (torch::cuda::is_available()) {
    at::Generator cg = at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, 0));
    auto cs = generator_state(cg);
    auto ca = at::randn({5}, cg, torch::kCUDA);
    set_generator_state(cg, cs);
    EXPECT_TRUE(torch::equal(at::randn({5}, cg, torch::kCUDA), ca));
  }
}
