#include "apps/tiny_world_demo.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <filesystem>
#include <functional>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "data/image.h"
#include "data/image_pool.h"
#include "apps/generate_geneval.h"
#include "apps/autoencoder_training.h"
#include "apps/edit_eval.h"
#include "apps/recon_eval.h"
#include "model/iomm_model.h"
#include "report/html_report.h"
#include "report/image_grid.h"
#include "report/run_report.h"
#include "train/generator_trainer.h"
#include "apps/understanding.h"
#include "world/corpus.h"
#include "world/prompts.h"
#include "world/shapes_eval.h"

namespace iomm {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The demo's model config in --configs: the latent design with the pooled condition (its base, iomm-tiny.toml, is
// the pixel-space model the tools and tests outside the demo use).
const std::string kDemoModel = "iomm-tiny-latent.toml";

// What a STAGE:key=value override (or an experiment file's table) may name.
constexpr std::array<std::string_view, 6> kOverrideStages = {"understanding", "autoencoder", "model", "pretrain",
                                                             "finetune",      "all"};
bool is_override_stage(const std::string& s) {
  return std::find(kOverrideStages.begin(), kOverrideStages.end(), s) != kOverrideStages.end();
}

// Config of one stage: its files, then the demo's fixed keys, then the user's STAGE:key=value overrides.
Config stage_config(const DemoOptions& o, const std::vector<std::string>& files, const std::vector<std::string>& sets,
                    const std::vector<std::string>& stages) {
  Config cfg;
  for (auto& f : files) cfg.merge(Config::load(o.configs + "/" + f));
  for (auto& s : sets) cfg.set(s);
  for (auto& ov : o.overrides) {
    auto colon = ov.find(':');
    if (colon == std::string::npos)
      fail("demo --set '{}': write STAGE:key=value with STAGE one of understanding, autoencoder, model, pretrain, "
           "finetune, all",
           ov);
    auto stage = ov.substr(0, colon);
    if (!is_override_stage(stage))
      fail("demo --set '{}': unknown stage '{}' (understanding, autoencoder, model, pretrain, finetune, all)", ov,
           stage);
    if (stage == "all" || std::find(stages.begin(), stages.end(), stage) != stages.end()) cfg.set(ov.substr(colon + 1));
  }
  return cfg;
}

int eval_threads(const DemoOptions& o) {
  return o.threads > 0 ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
}

struct Scored {
  std::string name;
  world::EvalResult result;
  double seconds = 0;
};

Scored evaluate_model(IommModel& model, const std::string& name, const std::vector<world::PromptSpec>& prompts,
                      const DemoOptions& o, const std::string& dir) {
  auto t = Clock::now();
  at::set_num_threads(eval_threads(o));
  fs::remove_all(dir);
  GenevalOptions g;
  g.per_prompt = o.per_prompt;
  g.batch = 64;
  g.generate.steps = o.eval_steps;
  g.generate.cfg_scale = o.eval_cfg;
  g.generate.seed = o.seed + 7;
  generate_geneval(model, prompts, dir, g);
  Scored s{name, world::evaluate_folder(dir), 0};
  world::write_grid(s.result, dir, dir + "_grid.png");
  s.seconds = since(t);
  spdlog::info("ShapesEval {}: overall {:.3f} ({:.1f}s)", name, s.result.overall, s.seconds);
  return s;
}

std::string rel(const std::string& path, const std::string& base) {
  return fs::relative(path, base).generic_string();
}

// "✓", or "✗ " and the verdict's reason up to its details (a caption under a 96 px image must stay short).
std::string short_verdict(const world::Verdict& v) {
  if (v.correct) return "✓";
  return "✗ " + v.reason.substr(0, v.reason.find(':'));
}

// The first sample of each of the first `max` prompts, captioned with its prompt and verdict, so the report says
// what each image was asked to show (the grid PNGs cannot).
void add_labelled_samples(report::HtmlReport& rep, const world::EvalResult& r, const std::string& dir,
                          const std::string& base, size_t max) {
  std::vector<report::Figure> figs;
  int last = -1;
  for (const auto& im : r.images) {
    if (im.prompt_index == last) continue;
    last = im.prompt_index;
    figs.push_back({rel(dir + "/" + im.file, base), im.prompt + " — " + short_verdict(im.verdict), true, 96});
    if (figs.size() >= max) break;
  }
  rep.add_image_row(figs);
}

// Input | reconstruction pairs of the proxy, captioned with the source's prompt and the reconstruction's verdict.
void add_labelled_recon(report::HtmlReport& rep, const ReconScore& s, const std::string& dir, const std::string& base,
                        size_t max) {
  std::vector<report::Figure> figs;
  for (const auto& im : s.shapes.images) {
    if (figs.size() >= 2 * max) break;
    figs.push_back({rel(dir + "/inputs/" + im.file, base), "input: " + im.prompt, true, 96});
    figs.push_back({rel(dir + "/recon/" + im.file, base), "reconstruction — " + short_verdict(im.verdict), true, 96});
  }
  rep.add_image_row(figs);
}

ReconScore reconstruction_proxy(IommModel& model, const std::vector<world::PromptSpec>& prompts,
                                const DemoOptions& o, const std::string& dir) {
  auto t = Clock::now();
  at::set_num_threads(eval_threads(o));
  ReconEvalOptions r;
  r.per_prompt = 1;  // 176 scenes: ~10 s on 2 cores
  r.generate.steps = o.eval_steps;
  r.generate.cfg_scale = o.recon_cfg;
  r.generate.seed = o.seed + 13;
  r.scene_seed = o.seed + 17;  // not the ground-truth pass's scenes (seed + 1)
  r.progress = false;
  auto s = run_recon_eval(model, prompts, dir, r);
  spdlog::info("stage-1 reconstruction proxy: ShapesEval {:.3f}, colour IoU {:.3f}, PSNR {:.2f} dB ({} scenes, {:.1f}s)",
               s.shapes.overall, s.color_iou, s.psnr, s.images, since(t));
  return s;
}

void add_recon_section(report::HtmlReport& rep, const ReconScore& s, const std::string& dir,
                       const std::string& base) {
  rep.add_heading("Stage 1: reconstruction proxy (held-out scenes redrawn from their own self-conditions)");
  rep.add_paragraph(fmt::format(
      "Each held-out prompt's rendered scene is the image condition (unmasked); ShapesEval judges the "
      "reconstruction against that scene's own prompt; colour IoU compares each palette colour's pixels with the "
      "input's (colour and place). {} scenes: ShapesEval overall {:.3f}, colour IoU {:.3f}, PSNR {:.2f} dB.",
      s.images, s.shapes.overall, s.color_iou, s.psnr));
  std::vector<std::vector<std::string>> rows;
  for (auto& [tag, c] : s.shapes.categories) rows.push_back({tag, fmt::format("{:.3f}", c.score())});
  rows.push_back({"overall", fmt::format("{:.3f}", s.shapes.overall)});
  rep.add_table({"category", "reconstruction ShapesEval"}, rows);
  add_labelled_recon(rep, s, dir, base, 24);
}

std::string newest(const std::string& dir, const std::string& suffix) {
  std::string best;
  if (!fs::exists(dir)) return best;
  for (auto& e : fs::directory_iterator(dir)) {
    auto n = e.path().filename().string();
    if (n.size() >= suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        e.path().string() > best)
      best = e.path().string();
  }
  return best;
}

}  // namespace

std::string stage_label(int stage, Config& cfg) {
  const auto data = train_data(cfg);  // the trainer's own resolution, so the label cannot disagree with the run
  return fmt::format("stage {} ({})", stage, data == "image" ? "image-only" : data == "pair" ? "pairs" : "mix");
}

std::vector<std::string> experiment_overrides(const std::string& path, std::string* name) {
  auto cfg = Config::load(path);
  std::vector<std::string> out;
  for (const auto& key : cfg.top_level_keys()) {
    if (key == "name" || key == "description") continue;
    if (!is_override_stage(key))
      fail("{}: table [{}] is not a stage; use [understanding], [autoencoder], [model], [pretrain], [finetune] or "
           "[all]",
           path, key);
    for (const auto& a : cfg.assignments(key)) out.push_back(key + ":" + a);  // "pretrain:train.data=\"image\""
  }
  if (name) *name = cfg.has("name") ? cfg.get_string("name", "") : std::filesystem::path(path).stem().string();
  return out;
}

namespace {

// Trains the tiny world's autoencoder on the image-only pool when the model config (with the user's overrides) says
// model.autoencoder = "learned"; returns its model directory, or "" when the config names another autoencoder.
std::string learned_autoencoder(const DemoOptions& o, const std::string& pool, nlohmann::ordered_json& results,
                                nlohmann::ordered_json& timings) {
  auto probe = stage_config(o, {kDemoModel}, {}, {"model"});
  if (probe.get_string("model.autoencoder", "identity") != "learned") return "";
  auto t = Clock::now();
  const std::string run = o.out + "/autoencoder";
  fs::remove_all(run);
  auto cfg = stage_config(o, {"autoencoder.toml"}, {"data.images=\"" + pool + "\"", fmt::format("train.seed={}", o.seed)},
                          {"autoencoder"});
  spdlog::info("2b/6 autoencoder (FLUX AE architecture, trained on the image-only pool) -> {}", run);
  auto r = train_autoencoder(cfg, run, false);
  results["autoencoder"] = r.eval;
  timings["autoencoder_s"] = since(t);
  return r.model_dir;
}

// Both generator stages' configs, read now as their training will read them: an error in a stage-2 key (or an
// --experiment's) then stops the demo in its first minutes, not after stage 1. Stage 2 is checked on the model
// config stage 1 will write (its model keys come from there).
using StageConfigFn = std::function<Config(const std::string& stage, std::vector<std::string> sets)>;

void check_stage_configs(const DemoOptions& o, const StageConfigFn& sets_for,
                         const std::vector<std::string>& data_sets) {
  for (std::string stage : {"pretrain", "finetune"}) {
    if (stage == "finetune" && o.stages == 1) break;
    try {
      check_generator_config(sets_for(stage, data_sets));
    } catch (const Error& e) {
      fail("demo: the {} stage's config ({}/{}.toml with the --set and --experiment overrides), checked before any "
           "training: {}",
           stage, o.configs, stage, e.what());
    }
  }
}

// --stages 1: the proxy's report and results.json, then the proxy's ShapesEval as the result.
double finish_stage1_only(const DemoOptions& o, const ReconScore& recon, nlohmann::ordered_json& results,
                          nlohmann::ordered_json& timings, const std::string& p_run, Clock::time_point t0) {
  timings["total_s"] = since(t0);
  results["timings"] = timings;
  results["options"] = {{"seed", o.seed}, {"image_only", o.image_only}, {"stages", 1}, {"prompts", o.prompts},
                        {"eval_steps", o.eval_steps}, {"recon_cfg", o.recon_cfg}, {"overrides", o.overrides}};
  write_file_atomic(o.out + "/results.json", results.dump(2) + "\n");
  report::HtmlReport rep("iomm demo --stages 1: stage 1 and its reconstruction proxy");
  add_recon_section(rep, recon, o.out + "/eval/recon", o.out);
  report::add_run_section(rep, p_run, o.out);
  rep.write(o.out + "/report.html");
  fmt::print("\nstage-1 reconstruction proxy: ShapesEval {:.3f}, colour IoU {:.3f}, PSNR {:.2f} dB   ({:.0f} s)\n",
             recon.shapes.overall, recon.color_iou, recon.psnr, timings["total_s"].get<double>());
  return recon.shapes.overall;
}

}  // namespace

double run_tiny_world_demo(const DemoOptions& opts) {
  auto t0 = Clock::now();
  DemoOptions o = opts;
  std::string experiment_name;
  if (!o.experiment.empty()) {
    auto ov = experiment_overrides(o.experiment, &experiment_name);
    o.overrides.insert(o.overrides.begin(), ov.begin(), ov.end());  // command-line --set wins
    spdlog::info("experiment {}: {}", experiment_name, fmt::join(ov, " "));
  }
  if (o.threads > 0) o.overrides.insert(o.overrides.begin(), fmt::format("all:train.threads={}", o.threads));
  fs::create_directories(o.out);
  nlohmann::ordered_json results;
  nlohmann::ordered_json timings;

  // 1. corpus
  auto t = Clock::now();
  world::CorpusOptions co;
  co.out = o.out + "/world";
  co.seed = o.seed;
  co.image_only = o.image_only;
  co.captioned = o.captioned;
  spdlog::info("1/6 corpus: {} image-only + {} captioned images -> {}", co.image_only, co.captioned, co.out);
  world::make_corpus(co);
  timings["corpus_s"] = since(t);

  // 2. understanding model (or a given one, e.g. shared by a series of experiments)
  t = Clock::now();
  std::string u_run = o.out + "/understanding";
  std::string mllm_dir;
  nlohmann::json caption_eval = nlohmann::json::object();
  if (o.mllm.empty()) {
    spdlog::info("2/6 understanding model (tiny InternVL, captioning) -> {}", u_run);
    fs::remove_all(u_run);
    auto ucfg = stage_config(o, {"understanding.toml"},
                             {"mllm.tokenizer=\"" + o.configs + "/tokenizer.json\"",
                              fmt::format("data.seed={}", o.seed)},
                             {"understanding"});
    ucfg.get_choice("train.stage", "understanding", {"understanding"});  // names its stage for `iomm train`
    auto ur = train_understanding(ucfg, u_run, false);
    mllm_dir = ur.model_dir;
    caption_eval = ur.eval;
  } else {
    u_run = fs::path(o.mllm).parent_path().string();
    mllm_dir = o.mllm;
    spdlog::info("2/6 understanding model: reusing {}", mllm_dir);
    if (fs::exists(u_run + "/caption_eval.json"))
      caption_eval = nlohmann::json::parse(read_file(u_run + "/caption_eval.json"));
    else
      spdlog::warn("--mllm {}: no caption_eval.json beside it (not an `iomm train` understanding run), so the "
                   "report has no caption accuracy", mllm_dir);
  }
  results["understanding"] = caption_eval;
  timings["understanding_s"] = since(t);

  // 2b. a learned autoencoder, when the model config asks for one (model.autoencoder = "learned")
  const std::string ae_dir = learned_autoencoder(o, co.out + "/image", results, timings);

  auto prompts = world::builtin_prompts(o.prompts);
  std::vector<std::string> model_sets = {"model.mllm=\"" + mllm_dir + "\""};
  // After the user's overrides: "learned" is the request, the trained directory its answer.
  auto with_autoencoder = [&](Config cfg) {
    if (!ae_dir.empty()) cfg.set("model.autoencoder=\"" + ae_dir + "\"");
    return cfg;
  };
  auto sets_for = [&](const std::string& stage, std::vector<std::string> extra) {
    auto s = model_sets;
    s.insert(s.end(), extra.begin(), extra.end());
    return with_autoencoder(stage_config(o, {kDemoModel, stage + ".toml"}, s, {"model", stage}));
  };

  // 3. the untrained generator (the floor), then stage 1
  std::vector<Scored> scores;
  if (o.stages != 1 && o.stages != 2) fail("demo --stages {}: use 1 (stage 1 and its proxy) or 2 (the recipe)", o.stages);
  const std::vector<std::string> data_sets = {"data.images=\"" + co.out + "/image\"",
                                              "data.pairs=\"" + co.out + "/captioned\""};
  check_stage_configs(o, sets_for, data_sets);
  if (o.stages == 2) {
    auto cfg = sets_for("pretrain", {});
    auto mc = IommModelConfig::from_config(cfg);
    auto untrained = IommModel::create(mc, o.seed);
    spdlog::info("5/6 (baseline) ShapesEval of the untrained generator");
    scores.push_back(evaluate_model(untrained, "untrained", prompts, o, o.out + "/eval/untrained"));
  }
  t = Clock::now();
  std::string p_run = o.out + "/pretrain", f_run = o.out + "/finetune";
  fs::remove_all(p_run);
  auto pcfg = sets_for("pretrain", {data_sets[0], data_sets[1], fmt::format("train.seed={}", o.seed)});
  const auto p_label = stage_label(1, pcfg);
  spdlog::info("3/6 {}: pre-training -> {}", p_label, p_run);
  auto pr = train_generator(pcfg, p_run, false);
  timings["pretrain_s"] = since(t);
  ReconScore recon;
  {
    auto m = IommModel::load(pr.model_dir);
    if (o.stages == 2) scores.push_back(evaluate_model(m, p_label, prompts, o, o.out + "/eval/pretrain"));
    t = Clock::now();
    recon = reconstruction_proxy(m, prompts, o, o.out + "/eval/recon");
    timings["recon_proxy_s"] = since(t);
  }
  results["stage1_recon"] = recon.to_json();
  if (o.stages == 1) return finish_stage1_only(o, recon, results, timings, p_run, t0);

  // 4. stage 2
  t = Clock::now();
  fs::remove_all(f_run);
  auto fcfg = with_autoencoder(
      stage_config(o, {"finetune.toml"},
                   {"train.init_from=\"" + p_run + "\"", "data.images=\"" + co.out + "/image\"",
                    "data.pairs=\"" + co.out + "/captioned\"", fmt::format("train.seed={}", o.seed + 1)},
                   {"model", "finetune"}));
  const auto f_label = stage_label(2, fcfg);
  spdlog::info("4/6 {}: fine-tuning from stage 1 -> {}", f_label, f_run);
  auto fr = train_generator(fcfg, f_run, false);
  timings["finetune_s"] = since(t);
  IommModel final_model = IommModel::load(fr.model_dir);
  scores.push_back(evaluate_model(final_model, f_label, prompts, o, o.out + "/eval/finetune"));

  // Ground truth: the evaluator's ceiling on the same prompts.
  world::render_prompts(prompts, o.out + "/eval/ground_truth", int(o.per_prompt), o.seed + 1, co.size, false);
  Scored gt{"ground truth", world::evaluate_folder(o.out + "/eval/ground_truth"), 0};

  // 5b. Zero-shot editing with the final model: recolouring instructions + held-out reference scenes, unmasked.
  t = Clock::now();
  EditEvalOptions eo;
  eo.cases = 64;
  eo.generate.steps = o.eval_steps;
  eo.generate.cfg_scale = o.eval_cfg;
  eo.generate.seed = o.seed + 11;
  eo.scene_seed = o.seed + 2;
  auto edit = run_edit_eval(final_model, prompts, o.out + "/eval/edit", eo);
  results["edit"] = edit.to_json();
  timings["edit_eval_s"] = since(t);

  // 6. report
  double total = since(t0);
  timings["total_s"] = total;
  report::HtmlReport rep("iomm demo: IOMM in the tiny world");
  rep.add_paragraph(fmt::format(
      "Two-stage IOMM recipe on the shapes world: a tiny InternVL trained by captioning is frozen as the MLLM; the "
      "generator trains on {} unlabeled images (self-conditioned, masked image tokens) and {} captioned images: "
      "{}, then {}. ShapesEval scores {} held-out prompts × {} images. Total {:.0f} s.",
      o.image_only, o.captioned, p_label, f_label, prompts.size(), o.per_prompt, total));
  rep.add_heading("ShapesEval on held-out prompts");
  std::vector<std::string> header = {"model"};
  for (auto& [tag, c] : gt.result.categories) header.push_back(tag);
  header.push_back("overall");
  std::vector<std::vector<std::string>> rows;
  auto row = [&](const Scored& s) {
    std::vector<std::string> r = {s.name};
    for (auto& [tag, c] : gt.result.categories) {
      auto it = s.result.categories.find(tag);
      r.push_back(fmt::format("{:.3f}", it == s.result.categories.end() ? 0.0 : it->second.score()));
    }
    r.push_back(fmt::format("{:.3f}", s.result.overall));
    rows.push_back(r);
  };
  for (auto& s : scores) row(s);
  row(gt);
  rep.add_table(header, rows);
  rep.add_image_row({{rel(o.out + "/eval/finetune_grid.png", o.out), "stage 2 samples (green: correct)", true, 0},
                     {rel(o.out + "/eval/pretrain_grid.png", o.out), "stage 1 samples", true, 0}});
  rep.add_heading("Stage 2 samples with their prompts (first image of each held-out prompt)", 3);
  add_labelled_samples(rep, scores.back().result, o.out + "/eval/finetune", o.out, prompts.size());
  add_recon_section(rep, recon, o.out + "/eval/recon", o.out);
  rep.add_heading("Understanding model (the frozen MLLM)");
  std::vector<std::vector<std::string>> urows;
  for (auto& [k, v] : caption_eval.items())
    if (v.is_number()) urows.push_back({k, fmt::format("{:.4g}", v.get<double>())});
  rep.add_table({"caption metric", "value"}, urows);
  rep.add_heading("Stage 1: reconstructions (input | output, self-conditioned, unmasked)");
  auto recon_grid = newest(p_run + "/samples", "-recon.png");
  if (!recon_grid.empty()) rep.add_image(rel(recon_grid, o.out), "stage-1 reconstructions next to their inputs");
  rep.add_heading("Zero-shot editing (reference | edit | the instruction alone)");
  rep.add_paragraph(fmt::format(
      "{} held-out scenes, each with \"make the shapes <colour>\" in a colour it does not have. Score = kept "
      "objects × applied colour (apps/edit_eval.h): edits {:.3f} (kept {:.3f}, applied {:.3f}); the instruction "
      "without the reference image {:.3f} (kept {:.3f}, applied {:.3f}).",
      edit.cases, edit.score, edit.kept, edit.applied, edit.control_score, edit.control_kept, edit.control_applied));
  rep.add_image(rel(o.out + "/eval/edit/edits.png", o.out), "zero-shot edits by the stage-2 model");
  rep.add_heading("Timings");
  std::vector<std::vector<std::string>> trows;
  for (auto& [k, v] : timings.items()) trows.push_back({k, fmt::format("{:.1f}", v.get<double>())});
  rep.add_table({"phase", "seconds"}, trows);
  report::add_run_section(rep, u_run, o.out);
  report::add_run_section(rep, p_run, o.out);
  report::add_run_section(rep, f_run, o.out);
  rep.write(o.out + "/report.html");

  // 7. results.json
  nlohmann::ordered_json sc;
  for (auto& s : scores) sc[s.name] = s.result.to_json();
  sc["ground truth"] = gt.result.to_json();
  results["shapes_eval"] = sc;
  nlohmann::ordered_json overall;
  for (auto& s : scores) overall[s.name] = s.result.overall;
  overall["ground truth"] = gt.result.overall;
  results["overall"] = overall;
  results["timings"] = timings;
  if (!experiment_name.empty()) results["experiment"] = experiment_name;
  results["options"] = {{"seed", o.seed}, {"image_only", o.image_only}, {"captioned", o.captioned},
                        {"prompts", o.prompts}, {"per_prompt", o.per_prompt}, {"eval_steps", o.eval_steps},
                        {"eval_cfg", o.eval_cfg}, {"overrides", o.overrides}};
  write_file_atomic(o.out + "/results.json", results.dump(2) + "\n");

  fmt::print("\nShapesEval overall on {} held-out prompts × {}:\n", prompts.size(), o.per_prompt);
  for (auto& s : scores) fmt::print("  {:<22} {:.3f}\n", s.name, s.result.overall);
  fmt::print("  {:<22} {:.3f} (colour IoU {:.3f}, PSNR {:.2f} dB)\n", "stage-1 recon proxy", recon.shapes.overall,
             recon.color_iou, recon.psnr);
  fmt::print("  {:<22} {:.3f} (kept {:.3f} x applied {:.3f}; the instruction alone {:.3f})\n", "zero-shot edits",
             edit.score, edit.kept, edit.applied, edit.control_score);
  fmt::print("  {:<22} {:.3f}\n\nreport: {}/report.html   results: {}/results.json   ({:.0f} s)\n", "ground truth",
             gt.result.overall, o.out, o.out, total);
  return scores.back().result.overall;
}

}  // namespace iomm
