// `iomm demo --out DIR`: the main job on the embedded default, IOMM end to end in the tiny world
// (apps/tiny_world_demo.h): corpus, understanding model, stage 1, stage 2, ShapesEval, report, results.
#include "cli/command.h"
#include "apps/tiny_world_demo.h"

namespace {

iomm::cli::Register reg{{"demo", "Run the main job on the embedded default: IOMM end to end in the tiny world",
  [](CLI::App& app) {
    auto a = std::make_shared<iomm::DemoOptions>();
    a->configs = std::string(IOMM_SOURCE_DIR) + "/configs/world";
    app.add_option("--out", a->out, "output directory")->capture_default_str();
    app.add_option("--configs", a->configs, "directory of the stage configs (understanding, autoencoder, "
                                            "iomm-tiny-latent (on iomm-tiny), pretrain, finetune .toml and "
                                            "tokenizer.json)")
        ->check(CLI::ExistingDirectory)
        ->capture_default_str();
    app.add_option("--seed", a->seed, "seed of the corpus, the models and the evaluation")->capture_default_str();
    app.add_option("--image-only", a->image_only, "image-only pool size")->capture_default_str();
    app.add_option("--captioned", a->captioned, "captioned pool size")->capture_default_str();
    app.add_option("--prompts", a->prompts, "held-out prompt set")
        ->check(CLI::IsMember({"eval", "eval-small"}))
        ->capture_default_str();
    app.add_option("--per-prompt", a->per_prompt, "images per evaluation prompt")->capture_default_str();
    app.add_option("--eval-steps", a->eval_steps, "sampling steps for evaluation")->capture_default_str();
    app.add_option("--eval-cfg", a->eval_cfg, "CFG scale for evaluation")->capture_default_str();
    app.add_option("--set", a->overrides,
                   "STAGE:key=value for STAGE in understanding, model, pretrain, finetune, all (repeatable), e.g. "
                   "--set pretrain:train.steps=100");
    app.add_option("--experiment", a->experiment, "experiment file (experiments/*.toml): its stage overrides")
        ->check(CLI::ExistingFile);
    app.add_option("--stages", a->stages, "1: stop after stage 1 and its reconstruction proxy (fast design loop); "
                                          "2: the whole recipe")
        ->check(CLI::IsMember({1, 2}))
        ->capture_default_str();
    app.add_option("--recon-cfg", a->recon_cfg, "CFG scale of the stage-1 reconstruction proxy")
        ->capture_default_str();
    app.add_option("--threads", a->threads, "torch threads of every phase (0: the configs' and all cores)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app.add_option("--mllm", a->mllm, "reuse an understanding model (RUN/model of an earlier demo or `iomm train`)")
        ->check(CLI::ExistingDirectory);
    return [a]() -> int {
      iomm::run_tiny_world_demo(*a);
      return 0;
    };
  }}};

}  // namespace
