// `iomm eval shapes`: ShapesEval (GenEval's rules, a colour/geometry detector) on a folder in GenEval's layout.
// `iomm eval recon`: the stage-1 reconstruction proxy (apps/recon_eval.h): ShapesEval and PSNR of a model's
// reconstructions of held-out scenes from their own self-conditions.
// `iomm eval edit`: the zero-shot editing score (apps/edit_eval.h): recolouring instructions on held-out scenes,
// scored by kept objects and applied colour, beside the instruction alone as a control.
#include <filesystem>

#include <spdlog/spdlog.h>

#include "apps/edit_eval.h"
#include "apps/recon_eval.h"
#include "apps/tiny_world_demo.h"
#include "cli/command.h"
#include "core/error.h"
#include "core/fs.h"
#include "world/prompts.h"
#include "world/shapes_eval.h"

namespace {

struct ShapesArgs {
  std::string images, out, grid;
};

struct ReconArgs {
  std::string model, out, prompts = "eval";
  bool rescore = false;
  iomm::ReconEvalOptions opt;
};

struct EditArgs {
  std::string model, out, prompts = "eval";
  iomm::EditEvalOptions opt;
};

// A built-in set's name or a metadata.jsonl file.
std::vector<iomm::world::PromptSpec> prompt_set(const std::string& name) {
  for (const char* b : iomm::world::kBuiltinSets)
    if (name == b) return iomm::world::builtin_prompts(name);
  return iomm::world::read_prompts(name);
}

int run_recon(const ReconArgs& a) {
  iomm::ReconScore s;
  if (a.rescore) {  // the folders of an earlier run, scored again (e.g. after a metric was added)
    s = iomm::score_reconstructions(a.out + "/inputs", a.out + "/recon");
    iomm::write_file_atomic(a.out + "/recon.json", s.to_json().dump(2) + "\n");
  } else {
    if (a.model.empty()) iomm::fail("eval recon: give --model RUN/model (or --rescore to score an earlier run's folders)");
    auto model = iomm::IommModel::load(a.model);
    s = iomm::run_recon_eval(model, prompt_set(a.prompts), a.out, a.opt);
  }
  for (const auto& [tag, c] : s.shapes.categories)
    spdlog::info("{:<14} {:.4f} ({} / {})", tag, c.score(), c.correct, c.total);
  spdlog::info("reconstructions of {} held-out scenes: ShapesEval {:.4f}, colour IoU {:.4f}, PSNR {:.2f} dB -> "
               "{}/recon.json", s.images, s.shapes.overall, s.color_iou, s.psnr, a.out);
  return 0;
}

int run_edit(const EditArgs& a) {
  auto model = iomm::IommModel::load(a.model);
  auto s = iomm::run_edit_eval(model, prompt_set(a.prompts), a.out, a.opt);
  spdlog::info("zero-shot edits of {} held-out scenes: score {:.4f} (kept {:.4f}, applied {:.4f}); the instruction "
               "alone: {:.4f} (kept {:.4f}, applied {:.4f}) -> {}/edit.json, {}/edits.png",
               s.cases, s.score, s.kept, s.applied, s.control_score, s.control_kept, s.control_applied, a.out, a.out);
  return 0;
}

iomm::cli::Register reg{{"eval", "Evaluate generated images (shapes: ShapesEval on the tiny world)",
  [](CLI::App& app) {
    app.require_subcommand(1);
    auto a = std::make_shared<ShapesArgs>();
    CLI::App* s = app.add_subcommand("shapes", "Score a folder <00000>/metadata.jsonl + samples/<0000>.png with "
                                               "ShapesEval (GenEval's rules on the tiny world)");
    s->add_option("--images", a->images, "folder in GenEval's output layout")->required()->check(CLI::ExistingDirectory);
    s->add_option("--out", a->out, "results JSON (scores, per-image records)")->required();
    s->add_option("--grid", a->grid, "optional PNG grid, each image framed green (pass) or red (fail)");
    auto r = std::make_shared<ReconArgs>();
    // Both defaults are the demo's protocol, so a standalone pass reproduces the demo's numbers.
    const iomm::DemoOptions demo;
    r->opt.generate.steps = demo.eval_steps;
    r->opt.generate.cfg_scale = demo.recon_cfg;
    CLI::App* rc = app.add_subcommand("recon", "The stage-1 reconstruction proxy: redraw rendered held-out scenes "
                                               "from their own self-conditions, score with ShapesEval (each against "
                                               "its source's metadata) and PSNR");
    rc->add_option("--model", r->model, "IOMM model directory (RUN/model); required unless --rescore")
        ->check(CLI::ExistingDirectory);
    rc->add_flag("--rescore", r->rescore, "score OUT/inputs against OUT/recon of an earlier run again (no model)");
    rc->add_option("--out", r->out, "output folder: inputs/, recon/, recon.json")->required();
    rc->add_option("--prompts", r->prompts, "eval | eval-small | a metadata.jsonl file")->capture_default_str();
    rc->add_option("--per-prompt", r->opt.per_prompt, "scenes per prompt")->capture_default_str();
    rc->add_option("--steps", r->opt.generate.steps, "sampling steps")->capture_default_str();
    rc->add_option("--cfg", r->opt.generate.cfg_scale, "CFG scale")->capture_default_str();
    rc->add_option("--seed", r->opt.generate.seed, "noise seed")->capture_default_str();
    rc->add_option("--scene-seed", r->opt.scene_seed, "seed of the rendered scenes")->capture_default_str();
    rc->add_flag("--features", r->opt.features,
                 "also write features.safetensors (c_img, query states) + scenes.jsonl for a linear probe");
    auto e = std::make_shared<EditArgs>();
    e->opt.generate.steps = demo.eval_steps;
    e->opt.generate.cfg_scale = demo.eval_cfg;
    CLI::App* ed = app.add_subcommand("edit", "Zero-shot editing: recolour held-out scenes by instruction; score kept "
                                              "objects x applied colour, beside the instruction alone");
    ed->add_option("--model", e->model, "IOMM model directory (RUN/model)")->required()->check(CLI::ExistingDirectory);
    ed->add_option("--out", e->out, "output folder: edit.json, edits.png")->required();
    ed->add_option("--prompts", e->prompts, "eval | eval-small | a metadata.jsonl file")->capture_default_str();
    ed->add_option("--cases", e->opt.cases, "number of edits")->capture_default_str()->check(CLI::PositiveNumber);
    ed->add_option("--steps", e->opt.generate.steps, "sampling steps")->capture_default_str();
    ed->add_option("--cfg", e->opt.generate.cfg_scale, "CFG scale")->capture_default_str();
    ed->add_option("--seed", e->opt.generate.seed, "noise seed")->capture_default_str();
    ed->add_option("--scene-seed", e->opt.scene_seed, "seed of the reference scenes")->capture_default_str();
    return [s, a, rc, r, ed, e]() -> int {
      if (rc->parsed()) return run_recon(*r);
      if (ed->parsed()) return run_edit(*e);
      if (!s->parsed()) return 0;
      const auto r = iomm::world::evaluate_folder(a->images);
      const auto parent = std::filesystem::path(a->out).parent_path();
      if (!parent.empty()) std::filesystem::create_directories(parent);
      iomm::write_file_atomic(a->out, r.to_json().dump(2) + "\n");
      if (!a->grid.empty()) iomm::world::write_grid(r, a->images, a->grid);
      for (const auto& [tag, c] : r.categories)
        spdlog::info("{:<14} {:.4f} ({} / {})", tag, c.score(), c.correct, c.total);
      spdlog::info("overall (mean over categories): {:.4f}; {} images -> {}", r.overall, r.images.size(), a->out);
      return 0;
    };
  }}};

}  // namespace
