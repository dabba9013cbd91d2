// `iomm generate` (text-to-image) and `iomm edit` (zero-shot editing: instruction + the reference image's
// tokens, unmasked) on a trained model directory (RUN/model, or RUN itself). Both write the parameters into the PNG
// (apps/generation_record.h) and take them back with --from-png.
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
#include "apps/generation_record.h"
#include "model/iomm_model.h"
#include "model/model_dir.h"
#include "model/model_fingerprint.h"
#include "world/prompts.h"

namespace {

namespace fs = std::filesystem;

struct SamplingArgs {
  std::string model, out, device, dtype, from_png;
  int64_t steps = 20, batch = 16;
  double cfg = 4.5, shift = 1.0;
  uint64_t seed = 0;
  std::string sampler = "euler";
  std::vector<CLI::Option*> sampling;  // the options --from-png replaces

  void add_to(CLI::App& app) {
    app.add_option("--model", model, "model directory (RUN/model) or the training run directory")->required();
    app.add_option("--out", out, "output PNG (one prompt) or directory (--prompts)")->required();
    sampling.push_back(
        app.add_option("--steps", steps, "sampling steps")->check(CLI::PositiveNumber)->capture_default_str());
    sampling.push_back(app.add_option("--cfg", cfg, "classifier-free guidance scale (1 = off)")->capture_default_str());
    sampling.push_back(app.add_option("--seed", seed, "noise seed")->capture_default_str());
    app.add_option("--batch", batch, "images per forward batch")->check(CLI::PositiveNumber)->capture_default_str();
    sampling.push_back(app.add_option("--sampler", sampler, "euler | dpmpp_2m")
                           ->check(CLI::IsMember({"euler", "dpmpp_2m"}))
                           ->capture_default_str());
    sampling.push_back(app.add_option("--shift", shift, "static time shift of the schedule")->capture_default_str());
    app.add_option("--device", device, "cpu, cuda, cuda:1 (default: as trained)");
    app.add_option("--dtype", dtype, "float32 | bfloat16 (default: as trained)");
  }
  // --from-png X.png: the prompt and sampling parameters recorded in an iomm PNG (they exclude the options).
  CLI::Option* add_from_png(CLI::App& app, std::vector<CLI::Option*> also_excluded) {
    auto* o = app.add_option("--from-png", from_png, "redo an iomm PNG: its recorded prompt, seed, steps, CFG, "
                                                     "sampler and shift (same model -> same bytes)")
                  ->check(CLI::ExistingFile);
    for (auto* x : sampling) o->excludes(x);
    for (auto* x : also_excluded) o->excludes(x);
    return o;
  }
  // The record to generate: from --from-png (checked against `task`), else from the options.
  iomm::GenerationRecord record(const std::string& task, const std::string& prompt) const {
    iomm::GenerationRecord r;
    if (!from_png.empty()) {
      r = iomm::read_png_record(from_png);
      if (r.task != task)
        iomm::fail("--from-png {}: the PNG was made by `iomm {}`; redo it with `iomm {} --from-png`", from_png, r.task,
                   r.task);
      return r;
    }
    r.task = task;
    r.prompt = prompt;
    r.seed = seed;
    r.steps = steps;
    r.cfg_scale = cfg;
    r.sampler = sampler;
    r.shift = shift;
    return r;
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
  std::string model_dir() const { return iomm::resolve_model_dir(model); }
  iomm::IommModel load() const { return iomm::IommModel::load(model_dir(), device, dtype); }
};

// The model's fingerprint into the record; a --from-png record made by other weights gives another image, said.
void stamp_fingerprint(iomm::GenerationRecord& r, const std::string& model_dir, const std::string& from_png) {
  std::string fp = iomm::model_fingerprint(model_dir);
  if (!from_png.empty() && !r.model_fingerprint.empty() && r.model_fingerprint != fp)
    spdlog::warn("--from-png {}: made by model {}, this model is {}; the image will differ", from_png,
                 r.model_fingerprint, fp);
  r.model_fingerprint = fp;
}

// iomm encodes PNG only: a .jpg name holding PNG bytes misleads every tool that trusts the extension.
void check_png_out(const std::string& out) {
  std::string ext = fs::path(out).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext != ".png")
    iomm::fail("--out '{}': iomm writes PNG images only, so the file name must end in .png (convert the PNG "
               "afterwards if you need another format)",
               out);
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
    a->add_from_png(app, {one, many});
    app.add_option("--per-prompt", a->per_prompt, "images per prompt with --prompts")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    return [a]() -> int {
      if (a->prompt.empty() && a->prompts.empty() && a->from_png.empty())
        iomm::fail("generate: give --prompt TEXT, --prompts FILE or --from-png X.png");
      if (a->prompts.empty()) {
        check_png_out(a->out);
        auto r = a->record("generate", a->prompt);
        iomm::check_generate_options(iomm::generate_options(r));  // before the model loads: fails in a second
        auto model = a->load();
        stamp_fingerprint(r, a->model_dir(), a->from_png);
        iomm::write_generated_png(iomm::generate_image(model, r), r, a->out);
        spdlog::info("wrote {}", a->out);
        return 0;
      }
      iomm::check_generate_options(a->options());
      auto model = a->load();
      iomm::GenevalOptions g;
      g.per_prompt = a->per_prompt;
      g.batch = a->batch;
      g.generate = a->options();
      g.model_fingerprint = iomm::model_fingerprint(a->model_dir());
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
    auto* prompt = app.add_option("--prompt", a->prompt, "editing instruction");
    a->add_from_png(app, {prompt});
    return [a]() -> int {
      if (a->prompt.empty() && a->from_png.empty()) iomm::fail("edit: give --prompt INSTRUCTION or --from-png X.png");
      check_png_out(a->out);
      auto r = a->record("edit", a->prompt);
      iomm::check_generate_options(iomm::generate_options(r));
      auto model = a->load();
      stamp_fingerprint(r, a->model_dir(), a->from_png);
      auto ref = iomm::reference_tensor(iomm::decode_image(a->image), model.config().resolution);
      iomm::write_generated_png(iomm::generate_image(model, r, ref), r, a->out);
      spdlog::info("wrote {}", a->out);
      return 0;
    };
  }}};

}  // namespace
