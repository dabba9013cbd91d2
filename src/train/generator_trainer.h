// IOMM's two training stages of the generator (paper §3, Alg. 1, App. B): `pretrain` (image-only,
// self-conditioned with Masked Image Modeling) and `finetune` (a mix of images and text-image pairs), each with
// data `image`, `pair` or `mix` (mix_ratio = P(image-only sample)), so the paper's six-recipe grid is six configs.
//
// One step: for each micro-batch, draw samples and conditions (CFG dropout to the unconditional prompt), run the
// conditioner (frozen MLLM, RQA with grad), the flow-matching loss, backward; then AdamW with clipping and the LR
// schedule, EMA. All randomness of step s comes from generators seeded by (seed, s), so a resumed run draws exactly
// what an uninterrupted one would (bit-exact on the CPU).
//
// Run directory: config.toml, log.txt, metrics.jsonl, samples/step-*-{t2i,recon}.png, checkpoints/step-*/
// (train/checkpoint.h), model/ (the final model, EMA weights when EMA is on; model/iomm_model.h).
#pragma once
#include <string>

namespace iomm {

class Config;

struct GeneratorTrainResult {
  int64_t steps = 0;
  double final_loss = 0;  // mean loss over the last logging window
  double seconds = 0;
  std::string model_dir;
};

// train.stage, which must be set: pretrain or finetune (fails listing them).
std::string generator_stage(Config& cfg);
// The data a stage trains on: train.data, by default what train.stage implies (pretrain: image, finetune: mix).
std::string train_data(Config& cfg);

// `cfg` holds [model], [generator], [conditioner], [train], [optim], [data], [sample]; with train.init_from
// (a model directory, or a run directory holding model/) the model keys default to that model's.
GeneratorTrainResult train_generator(Config& cfg, const std::string& run_dir, bool resume);

// Reads `cfg` as train_generator does (the model, the stage's settings, the loop, the parallelism; unknown keys
// refused) and fails as it would, without training or touching a run directory: a pipeline of stages checks a
// later stage's config before hours of an earlier one.
void check_generator_config(Config cfg);

}  // namespace iomm
