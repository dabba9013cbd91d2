// The FLOP counts of model/flops.cpp against counts derived from the modules themselves: every weight matrix (or
// convolution kernel) of the real module, named as in the checkpoint, times the number of positions it is applied
// to, plus the attention products. A formula that forgets a matrix, miscounts a width or a level fails here.
#include "model/flops.h"

#include <regex>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/config.h"
#include "model/iomm_model.h"
#include "models/qwen2.h"
#include "testing/tiny_model_config.h"

using namespace iomm;

namespace {

// 2 · Σ numel(W) · positions(W) over the module's matrices and kernels (dim ≥ 2); positions() of -1 = not applied
// per position (an embedding table).
template <class Positions>
double weight_flops(const torch::nn::Module& m, Positions positions) {
  double f = 0;
  for (auto& p : m.named_parameters()) {
    if (p.value().dim() < 2) continue;
    double n = positions(p.key());
    EXPECT_GE(n, 0) << p.key();
    f += 2.0 * double(p.value().numel()) * n;
  }
  return f;
}

bool has(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(Flops, MMDiTEqualsItsWeightsTimesTheirTokens) {
  GeneratorConfig g;
  g.mmdit.hidden_size = 48;
  g.mmdit.num_heads = 3;
  g.mmdit.depth = 2;
  g.mmdit.depth_single = 3;
  g.mmdit.context_in_dim = 40;
  g.mmdit.in_channels = g.mmdit.out_channels = 12;
  g.mmdit.axes_dim = {4, 6, 6};
  auto net = make_generator(g, "cpu", "float32");
  const double N = 36, L = 7, W = 48;
  double expected = weight_flops(net->module(), [&](const std::string& k) -> double {
    if (has(k, "_mod.") || has(k, "modulation") || has(k, "time_in") || has(k, "adaLN")) return 1;  // per sample
    if (has(k, "img_") || has(k, "final_layer.linear")) return N;
    if (has(k, "txt_")) return L;
    if (has(k, "single_blocks")) return N + L;
    return -1;
  });
  expected += (2 + 3) * 4 * (N + L) * (N + L) * W;  // QKᵀ and AV in every block, over the joint sequence
  EXPECT_NEAR(generator_flops(g, int64_t(N), int64_t(L)) / expected, 1.0, 1e-12);
}

TEST(Flops, Qwen2LayersEqualTheirWeightsTimesTheirTokens) {
  Qwen2Config c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 56;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 12;  // q width 48 ≠ hidden: a formula that used the hidden size for q/o fails
  Qwen2Model m(c);
  const int64_t n = 9;
  const double attended = 13.5;
  double expected = weight_flops(*m, [&](const std::string& k) -> double { return has(k, "embed") ? 0 : n; });
  expected += 3 * 4 * double(n) * attended * 48;
  EXPECT_NEAR(llm_flops(c, n, attended) / expected, 1.0, 1e-12);
}

// Convolutions: 2 · kernel numel · output pixels, the output resolution read from the checkpoint name's level.
TEST(Flops, FluxAutoencoderEqualsItsKernelsTimesTheirPixels) {
  AutoencoderConfig c;
  c.block_out_channels = {8, 16, 16};
  c.layers_per_block = 2;
  c.latent_channels = 4;
  c.norm_num_groups = 4;
  FluxAE ae(c);
  const int64_t H = 32, W = 24;
  auto px = [&](int level) { return double(H >> level) * double(W >> level); };
  const int last = 2;
  std::smatch sm;
  auto level_of = [&](const std::string& k, const char* pattern) {
    EXPECT_TRUE(std::regex_search(k, sm, std::regex(pattern))) << k;
    return std::stoi(sm[1]);
  };
  double enc = weight_flops(*ae->encoder, [&](const std::string& k) -> double {
    if (has(k, "conv_in")) return px(0);
    if (has(k, "downsample")) return px(level_of(k, R"(down\.(\d+)\.)") + 1);
    if (has(k, "down.")) return px(level_of(k, R"(down\.(\d+)\.)"));
    return px(last);  // mid and conv_out
  });
  enc += 4 * px(last) * px(last) * 16;  // mid attention over the last level's pixels
  EXPECT_NEAR(ae_encode_flops(c, H, W) / enc, 1.0, 1e-12);
  double dec = weight_flops(*ae->decoder, [&](const std::string& k) -> double {
    if (has(k, "conv_out")) return px(0);
    if (has(k, "upsample")) return px(level_of(k, R"(up\.(\d+)\.)") - 1);
    if (has(k, "up.")) return px(level_of(k, R"(up\.(\d+)\.)"));
    return px(last);  // conv_in and mid
  });
  dec += 4 * px(last) * px(last) * 16;
  EXPECT_NEAR(ae_decode_flops(c, H, W) / dec, 1.0, 1e-12);
}

TEST(Flops, TrainingCountsBackwardOnlyWhereGradientsFlow) {
  auto cfg = Config::parse(fixtures::tiny_model_toml());
  auto m = IommModel::create(IommModelConfig::from_config(cfg), 0);
  std::vector<ConditionInput> conds = {{ConditionKind::text, "a red circle", {}},
                                       {ConditionKind::image, "", torch::zeros({3, 16, 16})}};
  auto shape = condition_shape(m, conds);
  ASSERT_EQ(shape.prefix.size(), 2u);
  EXPECT_EQ(shape.images, 1);
  EXPECT_GT(shape.prefix[1], m.conditioner().image_tokens_per_image());  // template + T image tokens
  auto train = training_step_flops(m, shape);
  ConditionShape none;
  auto fwd = generation_flops(m, shape, none, 1, false);  // one forward of the conditioner and the generator
  EXPECT_DOUBLE_EQ(train.parts.at("generator"), 3 * fwd.parts.at("generator"));
  EXPECT_DOUBLE_EQ(train.parts.at("rqa"), 3 * fwd.parts.at("rqa"));
  EXPECT_DOUBLE_EQ(train.parts.at("llm_queries"), 2 * fwd.parts.at("llm_queries"));
  EXPECT_DOUBLE_EQ(train.parts.at("llm_prefix"), fwd.parts.at("llm_prefix"));
  EXPECT_DOUBLE_EQ(train.parts.at("vit"), vit_flops(m.conditioner().mllm->config));
  EXPECT_EQ(train.parts.count("autoencoder"), 0u);  // pixel space: nothing to encode
  // With CFG, generation runs the generator on both batches at every step.
  auto cfg2 = generation_flops(m, shape, shape, 4, true);
  EXPECT_DOUBLE_EQ(cfg2.parts.at("generator"), 8 * fwd.parts.at("generator"));
  EXPECT_GT(train.total(), 0);
}
