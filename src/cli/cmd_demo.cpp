// `iomm demo --out DIR`: the main job on the embedded default (the tiny world).
//
// Today it runs what exists end to end: the shapes corpus (image-only + captioned WebDataset pools), ground-truth
// renders of the held-out prompt set in GenEval's layout, and ShapesEval on them (the evaluator's ceiling), with
// results.json, a pass/fail grid and report.html. The IOMM stages (understanding model, image-only pre-training,
// mixed fine-tuning, generation) plug in here as they land.
#include <chrono>
#include <filesystem>

#include "cli/command.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "world/corpus.h"
#include "world/prompts.h"
#include "world/shapes_eval.h"

namespace {

struct Args {
  std::string out = "runs/demo";
  uint64_t seed = 0;
  int size = 32;
  int64_t image_only = 4000, captioned = 800;
  int per_prompt = 4;
};

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}

void write_report(const std::string& dir, const iomm::world::EvalResult& gt, double seconds) {
  std::string rows;
  for (auto& [tag, s] : gt.categories)
    rows += fmt::format("<tr><td>{}</td><td>{:.3f}</td><td>{}/{}</td></tr>\n", html_escape(tag), s.score(), s.correct,
                        s.total);
  std::string html = fmt::format(R"(<!doctype html>
<html><head><meta charset="utf-8"><title>iomm demo</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px}}img{{image-rendering:pixelated;max-width:100%}}</style></head><body>
<h1>iomm demo — the tiny world</h1>
<p>Corpus in <code>world/</code> (WebDataset shards + JSONL indexes), held-out prompts in
<code>world/prompts/eval.jsonl</code>. Run time {:.1f} s.</p>
<h2>ShapesEval on ground-truth renders (the evaluator's ceiling)</h2>
<table><tr><th>category</th><th>score</th><th>correct</th></tr>
{}<tr><th>overall</th><th>{:.3f}</th><th></th></tr></table>
<p>Each tile is framed green (correct) or red (wrong).</p>
<img src="ground_truth_grid.png" alt="ground-truth grid">
</body></html>
)",
                                 seconds, rows, gt.overall);
  iomm::write_file_atomic(dir + "/report.html", html);
}

iomm::cli::Register reg{{"demo", "Run the main job on the embedded default (the tiny world) into --out",
  [](CLI::App& app) {
    auto a = std::make_shared<Args>();
    app.add_option("--out", a->out, "output directory")->capture_default_str();
    app.add_option("--seed", a->seed, "seed of the corpus and renders")->capture_default_str();
    app.add_option("--size", a->size, "image side in px")->check(CLI::Range(32, 64))->capture_default_str();
    app.add_option("--image-only", a->image_only, "image-only pool size")->capture_default_str();
    app.add_option("--captioned", a->captioned, "captioned pool size")->capture_default_str();
    app.add_option("--per-prompt", a->per_prompt, "images per evaluation prompt")->capture_default_str();
    return [a] {
      namespace fs = std::filesystem;
      auto t0 = std::chrono::steady_clock::now();
      fs::create_directories(a->out);
      iomm::world::CorpusOptions co;
      co.out = a->out + "/world";
      co.seed = a->seed;
      co.size = a->size;
      co.image_only = a->image_only;
      co.captioned = a->captioned;
      spdlog::info("1/3 corpus: {} image-only + {} captioned images of {}px -> {}", co.image_only, co.captioned,
                   co.size, co.out);
      iomm::world::make_corpus(co);

      std::string gt_dir = a->out + "/ground_truth";
      auto prompts = iomm::world::read_prompts(co.out + "/prompts/eval.jsonl");
      spdlog::info("2/3 ground truth: {} held-out prompts x {} images -> {}", prompts.size(), a->per_prompt, gt_dir);
      fs::remove_all(gt_dir);
      iomm::world::render_prompts(prompts, gt_dir, a->per_prompt, a->seed + 1, a->size);

      spdlog::info("3/3 ShapesEval on the ground truth");
      auto gt = iomm::world::evaluate_folder(gt_dir);
      iomm::world::write_grid(gt, gt_dir, a->out + "/ground_truth_grid.png");
      double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      nlohmann::ordered_json results;
      results["stage"] = "ground_truth";
      results["seconds"] = seconds;
      results["ground_truth"] = gt.to_json();
      iomm::write_file_atomic(a->out + "/results.json", results.dump(2) + "\n");
      write_report(a->out, gt, seconds);

      fmt::print("\nShapesEval, ground truth ({} images):\n", gt.images.size());
      for (auto& [tag, s] : gt.categories) fmt::print("  {:<14} {:.3f}  ({}/{})\n", tag, s.score(), s.correct, s.total);
      fmt::print("  {:<14} {:.3f}\n\nreport: {}/report.html   results: {}/results.json   ({:.1f} s)\n", "overall",
                 gt.overall, a->out, a->out, seconds);
      return 0;
    };
  }}};

}  // namespace
