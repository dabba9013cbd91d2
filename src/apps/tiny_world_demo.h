// The main job on the embedded default: IOMM end to end in the tiny world (`iomm demo`, README's `make demo`).
//   1. corpus (image-only pool + small captioned pool + held-out prompts)
//   2. the understanding model (tiny InternVL trained by captioning, then frozen) and its caption accuracy
//   2b. a learned autoencoder (apps/autoencoder_training.h) when the model config says model.autoencoder = "learned"
//   3. stage 1: image-only pre-training (self-conditioning + MIM)
//   4. stage 2: fine-tuning on a mix of images and pairs, starting from stage 1
//   5. ShapesEval on the held-out prompts: untrained generator, stage 1, stage 2 (and the ground truth); and the
//      stage-1 reconstruction proxy (apps/recon_eval.h): stage 1 redrawing rendered held-out scenes from their
//      own self-conditions, scored by ShapesEval against each source's metadata and by PSNR
//   5b. the zero-shot editing score of the stage-2 model (apps/edit_eval.h)
//   6. OUT/report.html (sample grids per stage, stage-1 reconstructions beside their inputs, loss curves, scores)
//   7. OUT/results.json
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace iomm {

class Config;

struct DemoOptions {
  std::string out = "runs/demo";
  std::string configs;              // directory with understanding/autoencoder/iomm-tiny(-latent)/pretrain/finetune.toml
  uint64_t seed = 0;
  // 2:1 unlabeled to captioned: pairs stay the minority (the paper's premise) while 4,000 of them keep stage 2
  // from memorising a few hundred (corpus generation costs ~1 s; the understanding model reads its own stream).
  int64_t image_only = 8000, captioned = 4000;
  std::string prompts = "eval";     // held-out prompt set (eval | eval-small)
  int64_t per_prompt = 2;           // 352 images per pass on `eval`: ~25 s on 2 cores
  int64_t eval_steps = 16;
  // CFG 2 (2026-12-01, docs/tiny-world.md ninth round): on the long run's final model CFG 1.5 / 2 / 3 / 5 score
  // 0.508 / 0.513 / 0.444 / 0.355 (sampling seed 107; 0.493 / 0.476 / 0.372 at CFG 2 / 3 / 5, seed 7); at the demo's
  // length the model is indifferent within noise. CFG 5 was chosen on the blobs of 2026-11-22.
  double eval_cfg = 2.0;
  // "STAGE:key=value" overrides (STAGE = understanding | model | pretrain | finetune | all).
  std::vector<std::string> overrides;
  std::string experiment;           // a TOML file: name, [understanding] [model] [pretrain] [finetune] overrides
  std::string mllm;                 // reuse this understanding model (a model dir) instead of training one
  // 1: stop after stage 1 and its reconstruction proxy (no untrained / stage-1 text-to-image passes): the fast
  // loop for comparing generator designs. 2: the whole recipe.
  int stages = 2;
  double recon_cfg = 3.0;
  // Torch threads of every phase (training and evaluation); 0 = the configs' train.threads and all cores for
  // evaluation. 1 lets two design runs share a 2-core machine without slowing each other down.
  int threads = 0;           // the proxy's CFG: the stage-1 sample grid's (configs/world/pretrain.toml)
};

// The STAGE:key=value overrides of an experiment file (experiments/*.toml), and its name.
std::vector<std::string> experiment_overrides(const std::string& path, std::string* name = nullptr);

// "stage N (what it trained on)" from the stage's data as the trainer resolves it (train_data):
// "stage 1 (image-only)", "stage 2 (pairs)", ... An experiment may train a stage on pairs or a mix, and the
// report, results.json and the ablation table must say what the stage saw.
std::string stage_label(int stage, Config& cfg);

// Runs everything; returns the stage-2 ShapesEval overall score (with stages = 1: the proxy's ShapesEval).
double run_tiny_world_demo(const DemoOptions& o);

}  // namespace iomm
