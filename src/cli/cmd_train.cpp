// `iomm train --config FILE... [--set key=value]... --out RUN [--resume]`: runs the training stage named by
// `train.stage` — `understanding` (the tiny world's captioning MLLM, apps/understanding.h), `autoencoder` (its learned
// autoencoder, apps/autoencoder_training.h), `pretrain` or
// `finetune` (the IOMM generator).
#include <memory>

#include <spdlog/spdlog.h>

#include "cli/command.h"
#include "core/config.h"
#include "core/error.h"
#include "train/generator_trainer.h"
#include "apps/autoencoder_training.h"
#include "apps/understanding.h"

namespace {

struct Args {
  iomm::cli::ConfigArgs config;
  std::string out;
  bool resume = false;
};

int run(const Args& a) {
  iomm::Config cfg = a.config.load();
  if (!cfg.has("train.stage"))
    iomm::fail("{}: train.stage is not set, so there is nothing to train; set it to one of: understanding (the tiny "
               "world's captioning MLLM, configs/world/understanding.toml), autoencoder (the tiny world's learned "
               "autoencoder, configs/world/autoencoder.toml), pretrain (stage 1, image-only, "
               "configs/world/pretrain.toml), finetune (stage 2, mixed, configs/world/finetune.toml)",
               cfg.source());
  const auto stage = cfg.get_choice("train.stage", "", {"understanding", "autoencoder", "pretrain", "finetune"});
  if (stage == "autoencoder") {
    const auto r = iomm::train_autoencoder(cfg, a.out, a.resume);
    if (r.finished)
      spdlog::info("train: autoencoder (diffusers AutoencoderKL layout) -> {}; scores -> {}/autoencoder_eval.json",
                   r.model_dir, a.out);
    return 0;
  }
  if (stage == "understanding") {
    const auto r = iomm::train_understanding(cfg, a.out, a.resume);
    if (!r.finished) return 0;
    spdlog::info("train: understanding model (InternVL layout: config.json, model.safetensors, tokenizer.json) -> {}",
                 r.model_dir);
    spdlog::info("train: caption scores -> {}/caption_eval.json", a.out);
    return 0;
  }
  const auto r = iomm::train_generator(cfg, a.out, a.resume);
  if (!r.model_dir.empty()) spdlog::info("train: {} model -> {}", stage, r.model_dir);
  return 0;
}

iomm::cli::Register reg{{"train", "Train a stage: the understanding model (tiny world) or the IOMM generator",
  [](CLI::App& app) {
    auto a = std::make_shared<Args>();
    a->config.add_to(app);
    app.add_option("--out", a->out, "run directory (config, log, metrics, checkpoints, the trained model)")
        ->required();
    app.add_flag("--resume", a->resume, "continue the run in --out from its last saved state");
    return [a]() -> int { return run(*a); };
  }}};

}  // namespace
