#include "apps/recon_eval.h"

#include <cmath>
#include <filesystem>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/tensor_io.h"
#include "data/image.h"
#include "data/image_tensor.h"
#include "testing/tiny_fixtures.h"
#include "testing/tiny_model_config.h"
#include "world/corpus.h"

using namespace iomm;
namespace fs = std::filesystem;

namespace {

// Held-out scenes rendered in GenEval's layout, and a copy of the layout to put reconstructions into.
std::string rendered_inputs(const std::string& root) {
  auto dir = root + "/inputs";
  world::render_prompts(world::builtin_prompts("eval-small"), dir, 2, 7, 32, false);
  return dir;
}

// The same layout (metadata) with every image replaced by `make(input)`.
std::string replaced(const std::string& inputs, const std::string& out,
                     const std::function<at::Tensor(const at::Tensor&)>& make) {
  fs::copy(inputs, out, fs::copy_options::recursive);
  for (auto& e : fs::recursive_directory_iterator(out))
    if (e.path().extension() == ".png")
      write_png(tensor_to_image(make(image_to_tensor(decode_image(e.path().string())))), e.path().string());
  return out;
}

}  // namespace

TEST(ReconEval, TheInputsThemselvesScoreTheCeilingAndInfinitePsnr) {
  auto root = fixtures::temp_dir("recon");
  auto inputs = rendered_inputs(root);
  auto same = replaced(inputs, root + "/same", [](const at::Tensor& x) { return x; });
  auto s = score_reconstructions(inputs, same);
  EXPECT_EQ(s.images, 24 * 2);
  EXPECT_GE(s.shapes.overall, 0.95);  // ShapesEval on ground truth (docs/shapes-eval.md)
  EXPECT_EQ(s.mse, 0.0);
  EXPECT_EQ(s.color_iou, 1.0);
  EXPECT_TRUE(std::isinf(s.psnr));
  EXPECT_TRUE(s.to_json()["psnr_db"].is_null());
}

TEST(ReconEval, NoiseScoresNothingAndLowPsnr) {
  auto root = fixtures::temp_dir("recon");
  auto inputs = rendered_inputs(root);
  torch::manual_seed(0);
  auto noise = replaced(inputs, root + "/noise", [](const at::Tensor& x) { return torch::rand_like(x); });
  auto s = score_reconstructions(inputs, noise);
  EXPECT_LE(s.shapes.overall, 0.02);
  EXPECT_LT(s.psnr, 10.0);
  EXPECT_LT(s.color_iou, 0.1);
}

TEST(ReconEval, EachReconstructionIsJudgedAgainstItsOwnSource) {
  // Correct scenes of the *wrong* prompts (every reconstruction is another prompt's input): pixels are realistic,
  // but ShapesEval must judge each image against its own source's metadata and fail most of them.
  auto root = fixtures::temp_dir("recon");
  auto inputs = rendered_inputs(root);
  auto other = root + "/other";
  fs::copy(inputs, other, fs::copy_options::recursive);
  std::vector<fs::path> dirs;
  for (auto& e : fs::directory_iterator(other)) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  for (size_t i = 0; i < dirs.size(); ++i) {  // rotate the samples by 5 prompts (another category)
    auto from = fs::path(inputs) / dirs[(i + 5) % dirs.size()].filename() / "samples";
    fs::remove_all(dirs[i] / "samples");
    fs::copy(from, dirs[i] / "samples", fs::copy_options::recursive);
  }
  auto s = score_reconstructions(inputs, other);
  EXPECT_LE(s.shapes.overall, 0.5);
  EXPECT_LT(s.psnr, 30.0);
  EXPECT_LT(s.color_iou, 0.3);  // other colours in other places
  EXPECT_GT(s.mse, 0.0);
}

TEST(ReconEval, PaletteIouCountsColourAndPlace) {
  auto grey = torch::full({3, 8, 8}, 185.0f / 255);
  auto red = world::rgb(world::Color::red);
  auto with_red = [&](int64_t x0) {
    auto img = grey.clone();
    for (int c = 0; c < 3; ++c) img[c].narrow(0, 2, 4).narrow(0, 0, 4).narrow(1, x0, 4).fill_(red[size_t(c)] / 255.0f);
    return img;
  };
  EXPECT_EQ(palette_classes(grey).sum().item<int64_t>(), 0);  // the background is no colour
  EXPECT_EQ(palette_iou(with_red(0), with_red(0)), 1.0);
  EXPECT_NEAR(palette_iou(with_red(0), with_red(2)), 8.0 / 24.0, 1e-9);  // half the square overlaps
  EXPECT_EQ(palette_iou(with_red(0), grey), 0.0);
  EXPECT_EQ(palette_iou(grey, grey), 1.0);
  auto blue = with_red(0);
  auto b = world::rgb(world::Color::blue);
  for (int c = 0; c < 3; ++c) blue[c].narrow(0, 2, 4).narrow(1, 0, 4).fill_(b[size_t(c)] / 255.0f);
  EXPECT_EQ(palette_iou(with_red(0), blue), 0.0);  // the right place in the wrong colour
}

TEST(ReconEval, AMissingReconstructionIsNamed) {
  auto root = fixtures::temp_dir("recon");
  auto inputs = rendered_inputs(root);
  auto partial = replaced(inputs, root + "/partial", [](const at::Tensor& x) { return x; });
  fs::remove(fs::path(partial) / "00003" / "samples" / "0001.png");
  try {
    score_reconstructions(inputs, partial);
    ADD_FAILURE() << "a missing reconstruction was not reported";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("00003/samples/0001.png"), std::string::npos) << e.what();
  }
}

TEST(ReconEval, RunWritesReconstructionsScoresAndProbeFeatures) {
  auto cfg = Config::parse(fixtures::tiny_model_toml());
  cfg.set("model.resolution=32");  // the world renders 32..64 px
  auto model = IommModel::create(IommModelConfig::from_config(cfg), 0);
  auto out = fixtures::temp_dir("recon-run");
  ReconEvalOptions o;
  o.generate.steps = 2;
  o.generate.cfg_scale = 2.0;
  o.features = true;
  o.progress = false;
  auto prompts = world::builtin_prompts("eval-small");
  auto s = run_recon_eval(model, prompts, out, o);
  EXPECT_EQ(s.images, int64_t(prompts.size()));
  EXPECT_TRUE(fs::exists(out + "/recon/00000/samples/0000.png"));
  EXPECT_TRUE(fs::exists(out + "/recon.json"));
  EXPECT_EQ(s.shapes.overall, 0.0);  // an untrained (adaLN-Zero) generator draws no objects
  auto f = load_tensors(out + "/features.safetensors");
  EXPECT_EQ(f.at("vit_tokens").sizes(), (std::vector<int64_t>{int64_t(prompts.size()), 4, 32}));
  EXPECT_EQ(f.at("query_states").sizes(), (std::vector<int64_t>{int64_t(prompts.size()), 4, 32}));
  auto lines = read_file(out + "/scenes.jsonl");
  EXPECT_EQ(std::count(lines.begin(), lines.end(), '\n'), int64_t(prompts.size()));
  // The scene of line 0 is the one rendered as input 0: its first object is where the input has colour.
  auto first = nlohmann::json::parse(lines.substr(0, lines.find('\n')));
  EXPECT_EQ(first["prompt"], prompts[0].prompt);
  EXPECT_FALSE(first["scene"]["objects"].empty());
}
