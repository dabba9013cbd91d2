#include "train/memory_estimate.h"

#include <gtest/gtest.h>

#include "model/generator.h"

namespace iomm {
namespace {

GeneratorConfig small_mmdit() {
  GeneratorConfig g;
  g.mmdit.hidden_size = 16;
  g.mmdit.num_heads = 2;
  g.mmdit.depth = 1;
  g.mmdit.depth_single = 1;
  g.mmdit.mlp_ratio = 4.0;
  return g;
}

// Counted by hand from the lists in memory_estimate.cpp: D 16, F 64, 16 image + 8 context tokens (s = 24).
// Double block 24·(11·16 + 2·64) = 7296, single 24·(10·16 + 3·64) = 8448; backward's working set is one more of the
// largest; checkpointed, each keeps 24·16 = 384 and one block is recomputed at a time.
TEST(MemoryEstimate, ActivationsMatchTheHandCount) {
  auto g = small_mmdit();
  EXPECT_DOUBLE_EQ(generator_activation_elements(g, 16, 8, 0, false), 7296 + 8448 + 8448);
  EXPECT_DOUBLE_EQ(generator_activation_elements(g, 16, 8, 1, false), 2 * 384 + 8448 + 8448);
  // Every second block: the double block (index 0) is checkpointed, the single one is not.
  EXPECT_DOUBLE_EQ(generator_activation_elements(g, 16, 8, 2, false), 384 + 8448 + 8448 + 7296);
  // The CPU's attention: 2 × heads × s² more per block kept whole.
  const double scores = 2 * 2 * 24 * 24;
  EXPECT_DOUBLE_EQ(generator_activation_elements(g, 16, 8, 0, true), 7296 + 8448 + 8448 + 3 * scores);
}

TEST(MemoryEstimate, StatesFollowOptimizerZeroAndEma) {
  auto g = small_mmdit();
  MemoryInputs in;
  in.trainable_params = 1000;
  auto e = estimate_memory(g, in);
  EXPECT_DOUBLE_EQ(e.params, 4000);
  EXPECT_DOUBLE_EQ(e.grads, 4000);
  EXPECT_DOUBLE_EQ(e.optimizer, 8000);  // AdamW: two fp32 moments
  EXPECT_DOUBLE_EQ(e.ema, 4000);
  in.zero1_ranks = 4;
  EXPECT_DOUBLE_EQ(estimate_memory(g, in).optimizer, 2000);
  in.zero1_ranks = 1;
  in.optimizer = "muon";
  in.matrix_params = 600;  // one momentum on Muon's matrices, AdamW's two moments on the rest
  EXPECT_DOUBLE_EQ(estimate_memory(g, in).optimizer, 4 * (600 + 2 * 400));
  in.ema_on_cpu = true;
  EXPECT_DOUBLE_EQ(estimate_memory(g, in).ema, 0);
}

TEST(MemoryEstimate, ActivationsScaleWithBatchAndDtypeAndShrinkWithCheckpointing) {
  GeneratorConfig g;  // the default MM-DiT (IOMM-B's geometry)
  MemoryInputs in;
  in.image_tokens = 1024;  // 512² through the FLUX VAE and 2×2 patches
  in.context_tokens = 256;
  in.batch = 1;
  const double one = estimate_memory(g, in).activations;
  in.batch = 8;
  EXPECT_DOUBLE_EQ(estimate_memory(g, in).activations, 8 * one);
  in.activation_bytes = 2;
  EXPECT_DOUBLE_EQ(estimate_memory(g, in).activations, 4 * one);
  in.checkpoint_every = 1;
  EXPECT_LT(estimate_memory(g, in).activations, 0.25 * 4 * one);
  GeneratorConfig z;
  z.arch = "zimage";
  EXPECT_LT(generator_activation_elements(z, 1024, 256, 1, false), generator_activation_elements(z, 1024, 256, 0, false));
}

}  // namespace
}  // namespace iomm
