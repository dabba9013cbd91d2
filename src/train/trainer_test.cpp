// The shared training loop on a stage small enough to run in milliseconds: what the loop itself owes a run
// (metrics across an interruption), independent of any model.
#include "train/trainer.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/metrics.h"
#include "core/run_dir.h"
#include "testing/tiny_fixtures.h"

using namespace iomm;
namespace fs = std::filesystem;

namespace {

// Fits w to 1 under a squared loss: one parameter tensor, deterministic, no data.
class QuadraticStage : public TrainStage {
 public:
  std::string name() const override { return "quadratic"; }
  NamedTensors parameters() override { return {{"w", w_}}; }
  void set_training(bool) override {}
  MicroStep micro_step(int64_t, int64_t, double scale) override {
    auto loss = (w_ - 1).pow(2).sum();
    (loss * scale).backward();
    return {loss.item<double>(), 1, {}};
  }
  void export_model(const std::string& dir) override { fs::create_directories(dir); }

 private:
  at::Tensor w_ = torch::zeros({4}).requires_grad_(true);
};

LoopConfig loop(int64_t stop_at) {
  LoopConfig c;
  c.steps = 8;
  c.stop_at = stop_at;
  c.log_every = 1;
  c.checkpoint_every = 2;
  c.threads = 1;
  c.optim.lr = 0.1;
  return c;
}

std::vector<int64_t> logged_steps(const std::string& run) {
  std::vector<int64_t> steps;
  for (const auto& row : read_jsonl(run + "/metrics.jsonl")) steps.push_back(row.at("step").get<int64_t>());
  return steps;
}

}  // namespace

TEST(TrainingLoop, MetricsHoldEachStepOnceAfterAKillAndResume) {
  const std::string dir = fixtures::temp_dir("loop_resume");
  {
    QuadraticStage stage;
    run_training(stage, loop(5), RunDir::open(dir, false), false);
  }
  // A kill -9 during the step-5 save, as it happens in a long run: rows 1-5 are in metrics.jsonl, the newest
  // complete checkpoint is step 4, and the killed process was writing one more row.
  fs::remove(fs::path(dir) / "checkpoints" / "step-00000005" / "COMPLETE");
  std::ofstream(dir + "/metrics.jsonl", std::ios::app) << R"({"step": 6, "loss": 0.)";
  {
    QuadraticStage stage;
    auto r = run_training(stage, loop(0), RunDir::open(dir, true), true);
    EXPECT_TRUE(r.finished);
  }
  EXPECT_EQ(logged_steps(dir), (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
}
