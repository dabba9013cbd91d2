#include "train/determinism.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

using namespace iomm;

TEST(Determinism, SetDeterministicTogglesTorchsFlags) {
  set_deterministic(true);
  EXPECT_TRUE(at::globalContext().deterministicAlgorithms());
  EXPECT_TRUE(at::globalContext().deterministicCuDNN());
  EXPECT_FALSE(at::globalContext().benchmarkCuDNN());
  EXPECT_TRUE(determinism_fingerprint().at("deterministic").get<bool>());
  set_deterministic(false);
  EXPECT_FALSE(at::globalContext().deterministicAlgorithms());
}

TEST(Determinism, MismatchesNameWhatDiffers) {
  auto now = determinism_fingerprint();
  EXPECT_TRUE(determinism_mismatches(now).empty());
  EXPECT_TRUE(determinism_mismatches(nlohmann::json::object()).empty());  // older states without a fingerprint

  auto other = now;
  other["intra_op_threads"] = at::get_num_threads() + 3;
  other["deterministic"] = !now["deterministic"].get<bool>();
  auto m = determinism_mismatches(other);
  ASSERT_EQ(m.size(), 2u);
  EXPECT_NE(m[0].find("deterministic"), std::string::npos) << m[0];
  EXPECT_NE(m[1].find("OMP_NUM_THREADS=" + std::to_string(at::get_num_threads() + 3)), std::string::npos) << m[1];
}
