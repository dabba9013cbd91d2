#include "apps/generate_geneval.h"

#include <filesystem>

#include <torch/torch.h>

#include "apps/generation_record.h"
#include "core/fs.h"
#include "core/progress.h"

namespace iomm {

namespace fs = std::filesystem;

int64_t generate_geneval(IommModel& model, const std::vector<world::PromptSpec>& prompts, const std::string& out,
                         const GenevalOptions& o) {
  struct Job {
    size_t prompt;
    int64_t k;
  };
  std::vector<Job> jobs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto dir = fmt::format("{}/{:05d}", out, i);
    fs::create_directories(dir + "/samples");
    auto line = prompts[i].raw.is_null() ? world::to_json(prompts[i]).dump() : prompts[i].raw.dump();
    write_file_atomic(dir + "/metadata.jsonl", line + "\n");
    for (int64_t k = 0; k < o.per_prompt; ++k) jobs.push_back({i, k});
  }
  std::unique_ptr<ProgressBar> bar;
  if (o.progress) bar = std::make_unique<ProgressBar>(int64_t(jobs.size()), "generate", "img");
  for (size_t start = 0; start < jobs.size(); start += size_t(o.batch)) {
    size_t end = std::min(jobs.size(), start + size_t(o.batch));
    std::vector<ConditionInput> conds;
    GenerateOptions g = o.generate;
    g.seeds.clear();
    for (size_t j = start; j < end; ++j) {
      conds.push_back({ConditionKind::text, prompts[jobs[j].prompt].prompt, {}});
      g.seeds.push_back(o.generate.seed + jobs[j].prompt * 1000 + uint64_t(jobs[j].k));
    }
    auto images = model.generate(conds, g);
    for (size_t j = start; j < end; ++j) {
      GenerationRecord r;
      r.prompt = prompts[jobs[j].prompt].prompt;
      r.seed = g.seeds[j - start];
      r.steps = g.steps;
      r.cfg_scale = g.cfg_scale;
      r.sampler = g.sampler;
      r.shift = g.shift;
      r.model_fingerprint = o.model_fingerprint;
      write_generated_png(images[int64_t(j - start)], r,
                          fmt::format("{}/{:05d}/samples/{:04d}.png", out, jobs[j].prompt, jobs[j].k));
    }
    if (bar) bar->update(int64_t(end - start));
  }
  if (bar) bar->finish();
  return int64_t(jobs.size());
}

}  // namespace iomm
