// `iomm generate` (text-to-image) and `iomm edit` (zero-shot editing: instruction + the reference image's
// tokens, unmasked) on a trained model directory (RUN/model, or RUN itself).
#include <algorithm>
#include <cctype>
#include <filesystem>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "cli/command.h"
#include "core/error.h"
#include "data/image.h"
#include "data/image_tensor.h"
#include "apps/generate_geneval.h"
#include "model/iomm_model.h"
#include "world/prompts.h"

namespace {

namespace fs = std::filesystem;

struct SamplingArgs {
  std::string model, out, device, dtype;
  int64_t steps = 20, batch = 16;
  double cfg = 4.5, shift = 1.0;
  uint64_t seed = 0;
  std::string sampler = "euler";

  void add_to(CLI::App& app) {
    app.add_option("--model", model, "model directory (RUN/model) or the training run directory")->required();
    app.add_option("--out", out, "output PNG (one prompt) or directory (--prompts)")->required();
    app.add_option("--steps", steps, "sampling steps")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--cfg", cfg, "classifier-free guidance scale (1 = off)")->capture_default_str();
    app.add_option("--seed", seed, "noise seed")->capture_default_str();
    app.add_option("--batch", batch, "images per forward batch")->check(CLI::PositiveNumber)->capture_default_str();
    app.add_option("--sampler", sampler, "euler | dpmpp_2m")
        ->check(CLI::IsMember({"euler", "dpmpp_2m"}))
        ->capture_default_str();
    app.add_option("--shift", shift, "static time shift of the schedule")->capture_default_str();
    app.add_option("--device", device, "cpu, cuda, cuda:1 (default: as trained)");
    app.add_option("--dtype", dtype, "float32 | bfloat16 (default: as trained)");
  }
  iomm::GenerateOptions options() const {
    iomm::GenerateOptions o;
    o.steps = steps;
    o.cfg_scale = cfg;
    o.seed = seed;
    o.sampler = sampler;
    o.shift = shift;
    return o;
  }
  iomm::IommModel load() const {
    std::string dir = fs::exists(model + "/iomm.toml") ? model : model + "/model";
    return iomm::IommModel::load(dir, device, dtype);
  }
};

// iomm encodes PNG only: a .jpg name holding PNG bytes misleads every tool that trusts the extension.
void check_png_out(const std::string& out) {
  std::string ext = fs::path(out).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext != ".png")
    iomm::fail("--out '{}': iomm writes PNG images only, so the file name must end in .png (convert the PNG "
               "afterwards if you need another format)",
               out);
}

void write_image(const at::Tensor& img, const std::string& path) {
  auto parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  iomm::write_png(iomm::tensor_to_image(iomm::denormalize_signed(img).clamp(0, 1)), path);
}

struct GenerateArgs : SamplingArgs {
  std::string prompt, prompts;
  int64_t per_prompt = 4;
};

iomm::cli::Register gen_reg{{"generate", "Text-to-image with a trained IOMM model (one prompt, or a GenEval "
                                         "metadata.jsonl into GenEval's layout)",
  [](CLI::App& app) {
    auto a = std::make_shared<GenerateArgs>();
    a->add_to(app);
    auto* one = app.add_option("--prompt", a->prompt, "one prompt -> --out x.png");
    auto* many = app.add_option("--prompts", a->prompts, "GenEval metadata.jsonl -> --out DIR/<00000>/samples/*.png")
                     ->check(CLI::ExistingFile);
    one->excludes(many);
    app.add_option("--per-prompt", a->per_prompt, "images per prompt with --prompts")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    return [a]() -> int {
      if (a->prompt.empty() && a->prompts.empty()) iomm::fail("generate: give --prompt TEXT or --prompts FILE");
      if (!a->prompt.empty()) check_png_out(a->out);
      iomm::check_generate_options(a->options());  // before the model loads: a bad option fails in a second
      auto model = a->load();
      if (!a->prompt.empty()) {
        auto img = model.generate({{iomm::ConditionKind::text, a->prompt, {}}}, a->options());
        write_image(img[0], a->out);
        spdlog::info("wrote {}", a->out);
        return 0;
      }
      iomm::GenevalOptions g;
      g.per_prompt = a->per_prompt;
      g.batch = a->batch;
      g.generate = a->options();
      auto prompts = iomm::world::read_prompts(a->prompts);
      int64_t n = iomm::generate_geneval(model, prompts, a->out, g);
      spdlog::info("wrote {} images for {} prompts to {} (score: iomm eval shapes --images {} --out results.json)", n,
                   prompts.size(), a->out, a->out);
      return 0;
    };
  }}};

struct EditArgs : SamplingArgs {
  std::string image, prompt;
};

iomm::cli::Register edit_reg{{"edit", "Zero-shot image editing: instruction + reference image -> edited image",
  [](CLI::App& app) {
    auto a = std::make_shared<EditArgs>();
    a->add_to(app);
    app.add_option("--image", a->image, "reference image")->required()->check(CLI::ExistingFile);
    app.add_option("--prompt", a->prompt, "editing instruction")->required();
    return [a]() -> int {
      check_png_out(a->out);
      iomm::check_generate_options(a->options());
      auto model = a->load();
      int res = int(model.config().resolution);
      auto img = iomm::resize_shorter_side_center_crop(iomm::to_rgb(iomm::decode_image(a->image)), res,
                                                       iomm::Resample::Bicubic);
      auto ref = iomm::normalize_signed(iomm::image_to_tensor(img));
      auto out = model.generate({{iomm::ConditionKind::edit, a->prompt, ref}}, a->options());
      write_image(out[0], a->out);
      spdlog::info("wrote {}", a->out);
      return 0;
    };
  }}};

}  // namespace
