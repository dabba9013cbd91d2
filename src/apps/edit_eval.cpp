#include "apps/edit_eval.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/progress.h"
#include "data/image.h"
#include "data/image_tensor.h"
#include "report/image_grid.h"
#include "world/corpus.h"
#include "world/detect.h"

namespace iomm {

namespace fs = std::filesystem;

std::vector<EditCase> make_edit_cases(const std::vector<world::PromptSpec>& prompts, int64_t n, uint64_t seed,
                                      int size) {
  if (prompts.empty()) fail("eval edit: no prompts to draw reference scenes from; pass --prompts eval (the built-in held-out set) or a "
         "non-empty metadata.jsonl");
  if (n < 1) fail("eval edit: the number of cases must be >= 1, got {}", n);
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 77);
  std::vector<EditCase> cases;
  for (int64_t c = 0; c < n; ++c) {
    const size_t i = size_t(c) % prompts.size();
    const int k = int(size_t(c) / prompts.size());
    EditCase e;
    e.reference = world::ground_truth_scene(prompts[i], i, k, seed, size);
    std::vector<world::Color> free;
    for (auto col : world::kColors) {
      bool used = std::any_of(e.reference.objects.begin(), e.reference.objects.end(),
                              [&](const world::Object& o) { return o.color == col; });
      if (!used) free.push_back(col);
    }
    if (free.empty()) continue;  // a scene in every colour cannot be recoloured to a new one (not in the tiny world)
    e.target = free[std::uniform_int_distribution<size_t>(0, free.size() - 1)(rng)];
    e.instruction = fmt::format("make the shapes {}", world::name(e.target));
    cases.push_back(std::move(e));
  }
  return cases;
}

EditMatch score_edit(const world::Scene& reference, world::Color target, const world::Raster& edited) {
  auto found = world::detect(edited);
  std::vector<bool> used(found.size(), false);
  int64_t matched = 0, in_target = 0;
  for (const auto& obj : reference.objects) {
    const double radius = std::max(3.0, obj.size / 2);
    size_t best = found.size();
    double best_d = std::numeric_limits<double>::infinity();
    for (size_t j = 0; j < found.size(); ++j) {
      if (used[j]) continue;
      const auto& b = found[j].bbox;
      const double d = std::hypot((b[0] + b[2]) / 2 - obj.cx(), (b[1] + b[3]) / 2 - obj.cy());
      if (d <= radius && d < best_d) best = j, best_d = d;
    }
    if (best == found.size()) continue;
    used[best] = true;
    ++matched;
    if (found[best].color == target) ++in_target;
  }
  EditMatch m;
  if (!reference.objects.empty()) m.kept = double(matched) / double(reference.objects.size());
  if (matched > 0) m.applied = double(in_target) / double(matched);
  return m;
}

nlohmann::ordered_json EditScore::to_json() const {
  return {{"cases", cases},
          {"score", score},
          {"kept", kept},
          {"applied", applied},
          {"control_score", control_score},
          {"control_kept", control_kept},
          {"control_applied", control_applied}};
}

namespace {

// Generated images for `conds` in batches, [N, 3, H, W] in [0, 1] on the CPU; image c's noise seed depends on c.
at::Tensor generate_batched(IommModel& model, const std::vector<ConditionInput>& conds, const EditEvalOptions& o,
                            ProgressBar* bar) {
  std::vector<at::Tensor> out;
  for (size_t start = 0; start < conds.size(); start += size_t(o.batch)) {
    const size_t end = std::min(conds.size(), start + size_t(o.batch));
    GenerateOptions g = o.generate;
    g.seeds.clear();
    for (size_t c = start; c < end; ++c) g.seeds.push_back(o.generate.seed + c);
    std::vector<ConditionInput> part(conds.begin() + int64_t(start), conds.begin() + int64_t(end));
    out.push_back(denormalize_signed(model.generate(part, g)).to(torch::kCPU, torch::kFloat).clamp(0, 1));
    if (bar) bar->update(int64_t(end - start));
  }
  return torch::cat(out);
}

}  // namespace

EditScore run_edit_eval(IommModel& model, const std::vector<world::PromptSpec>& prompts, const std::string& out,
                        const EditEvalOptions& o) {
  if (o.batch < 1) fail("eval edit: batch must be >= 1, got {}", o.batch);
  const int size = int(model.config().resolution);
  auto cases = make_edit_cases(prompts, o.cases, o.scene_seed, size);
  std::vector<at::Tensor> refs;
  std::vector<ConditionInput> edits, controls;
  for (const auto& c : cases) {
    refs.push_back(image_to_tensor(world::to_image(world::render(c.reference))));
    edits.push_back({ConditionKind::edit, c.instruction, normalize_signed(refs.back())});
    controls.push_back({ConditionKind::text, c.instruction});
  }
  std::unique_ptr<ProgressBar> bar;
  if (o.progress) bar = std::make_unique<ProgressBar>(int64_t(2 * cases.size()), "edit", "img");
  auto edited = generate_batched(model, edits, o, bar.get());
  auto control = generate_batched(model, controls, o, bar.get());
  if (bar) bar->finish();

  EditScore s;
  s.cases = int64_t(cases.size());
  auto records = nlohmann::ordered_json::array();
  for (size_t c = 0; c < cases.size(); ++c) {
    auto e = score_edit(cases[c].reference, cases[c].target, world::to_raster(tensor_to_image(edited[int64_t(c)])));
    auto t = score_edit(cases[c].reference, cases[c].target, world::to_raster(tensor_to_image(control[int64_t(c)])));
    s.kept += e.kept, s.applied += e.applied, s.score += e.score();
    s.control_kept += t.kept, s.control_applied += t.applied, s.control_score += t.score();
    records.push_back({{"instruction", cases[c].instruction}, {"reference", world::to_json(cases[c].reference)},
                       {"kept", e.kept}, {"applied", e.applied}, {"control_kept", t.kept},
                       {"control_applied", t.applied}});
  }
  const double n = double(std::max<int64_t>(1, s.cases));
  for (double* v : {&s.kept, &s.applied, &s.score, &s.control_kept, &s.control_applied, &s.control_score}) *v /= n;

  fs::create_directories(out);
  // One tile per case: reference | edit | control, side by side.
  auto tiles = torch::cat({torch::stack(refs), edited, control}, 3);
  write_png(report::make_image_grid(tiles, 8, 2), out + "/edits.png");
  auto j = s.to_json();
  j["records"] = records;
  write_file_atomic(out + "/edit.json", j.dump(2) + "\n");
  return s;
}

}  // namespace iomm
