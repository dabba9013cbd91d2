// `iomm eval shapes`: ShapesEval (GenEval's rules, a colour/geometry detector) on a folder in GenEval's layout.
#include <filesystem>

#include <spdlog/spdlog.h>

#include "cli/command.h"
#include "core/fs.h"
#include "world/shapes_eval.h"

namespace {

struct ShapesArgs {
  std::string images, out, grid;
};

iomm::cli::Register reg{{"eval", "Evaluate generated images (shapes: ShapesEval on the tiny world)",
  [](CLI::App& app) {
    app.require_subcommand(1);
    auto a = std::make_shared<ShapesArgs>();
    CLI::App* s = app.add_subcommand("shapes", "Score a folder <00000>/metadata.jsonl + samples/<0000>.png with "
                                               "ShapesEval (GenEval's rules on the tiny world)");
    s->add_option("--images", a->images, "folder in GenEval's output layout")->required()->check(CLI::ExistingDirectory);
    s->add_option("--out", a->out, "results JSON (scores, per-image records)")->required();
    s->add_option("--grid", a->grid, "optional PNG grid, each image framed green (pass) or red (fail)");
    return [s, a]() -> int {
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
