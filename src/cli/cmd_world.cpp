// `iomm world make` (the shapes corpus) and `iomm world render` (ground-truth images for a prompt file).
#include <spdlog/spdlog.h>

#include "cli/command.h"
#include "world/corpus.h"

namespace {

struct MakeArgs {
  iomm::world::CorpusOptions o;
};
struct RenderArgs {
  std::string prompts, out;
  int per_prompt = 4, size = 32;
  uint64_t seed = 0;
};

iomm::cli::Register reg{{"world", "The tiny world: make the shapes corpus, render ground truth for prompts",
  [](CLI::App& app) {
    app.require_subcommand(1);
    auto make = std::make_shared<MakeArgs>();
    auto render = std::make_shared<RenderArgs>();
    CLI::App* m = app.add_subcommand("make", "Write the shapes corpus: image-only and captioned WebDataset pools, "
                                             "JSONL indexes, held-out prompt sets in DIR/prompts/");
    m->add_option("--out", make->o.out, "output directory")->required();
    m->add_option("--seed", make->o.seed, "corpus seed (same seed, same bytes)");
    m->add_option("--size", make->o.size, "image side in px")->check(CLI::Range(32, 64));
    // 10M images of 32-64 px is ~0.1-0.5 TB of PNGs: the bound refuses a typo (1e11) before anything is written.
    m->add_option("--image-only", make->o.image_only, "image-only pool size")->check(CLI::Range(0, 10'000'000));
    m->add_option("--captioned", make->o.captioned, "captioned pool size")->check(CLI::Range(0, 10'000'000));
    m->add_option("--shard-size", make->o.shard_size, "samples per tar shard")->check(CLI::PositiveNumber);
    CLI::App* r = app.add_subcommand("render", "Ground-truth images for a GenEval-style prompt file, in GenEval's "
                                               "layout OUT/<00000>/{metadata.jsonl,samples/<0000>.png}");
    r->add_option("--prompts", render->prompts, "metadata.jsonl (GenEval form)")->required()->check(CLI::ExistingFile);
    r->add_option("--out", render->out, "output directory")->required();
    r->add_option("--per-prompt", render->per_prompt, "images per prompt")->check(CLI::PositiveNumber);
    r->add_option("--seed", render->seed, "render seed");
    r->add_option("--size", render->size, "image side in px")->check(CLI::Range(32, 64));
    return [m, r, make, render]() -> int {
      if (m->parsed()) {
        const auto rep = iomm::world::make_corpus(make->o);
        spdlog::info("world make: {} image-only + {} captioned images in {:.2f}s ({:.0f} img/s) -> {}", rep.images,
                     rep.captioned, rep.seconds, double(rep.images + rep.captioned) / std::max(rep.seconds, 1e-9),
                     make->o.out);
      } else if (r->parsed()) {
        const auto prompts = iomm::world::read_prompts(render->prompts);
        iomm::world::render_prompts(prompts, render->out, render->per_prompt, render->seed, render->size);
        spdlog::info("world render: {} prompts x {} images -> {}", prompts.size(), render->per_prompt, render->out);
      }
      return 0;
    };
  }}};

}  // namespace
