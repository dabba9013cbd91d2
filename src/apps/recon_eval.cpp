#include "apps/recon_eval.h"

#include <cmath>
#include <filesystem>
#include <limits>

#include <torch/torch.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/progress.h"
#include "core/tensor_io.h"
#include "data/image.h"
#include "data/image_tensor.h"
#include "world/corpus.h"
#include "world/scene.h"

namespace iomm {

namespace fs = std::filesystem;

namespace {

struct Job {
  size_t prompt;
  int k;
};

std::string sample_path(const std::string& dir, size_t prompt, int k) {
  return fmt::format("{}/{:05d}/samples/{:04d}.png", dir, prompt, k);
}

// Every (prompt, sample) of a GenEval-layout folder, in order.
std::vector<std::pair<std::string, std::string>> sample_files(const std::string& dir) {
  std::vector<std::pair<std::string, std::string>> out;  // (prompt folder, file name)
  if (!fs::is_directory(dir)) fail("{} is not a folder in GenEval's layout (<00000>/samples/<0000>.png)", dir);
  std::vector<std::string> prompts;
  for (auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && fs::exists(e.path() / "metadata.jsonl")) prompts.push_back(e.path().filename().string());
  std::sort(prompts.begin(), prompts.end());
  for (auto& p : prompts) {
    std::vector<std::string> files;
    for (auto& e : fs::directory_iterator(fs::path(dir) / p / "samples"))
      if (e.path().extension() == ".png") files.push_back(e.path().filename().string());
    std::sort(files.begin(), files.end());
    for (auto& f : files) out.emplace_back(p, f);
  }
  return out;
}

at::Tensor read_rgb(const std::string& path) {
  auto img = decode_image(path);
  if (img.channels != 3) fail("{}: expected an RGB image, got {} channels", path, img.channels);
  return image_to_tensor(img);  // [3, H, W] in [0, 1]
}

struct PixelScores {
  double sse = 0;        // sum of squared errors
  int64_t values = 0;    // pixel values compared
  double iou_sum = 0;    // palette_iou summed over images
  int64_t images = 0;
};

// Squared errors and palette IoU of every reconstruction against its input.
PixelScores pixel_scores(const std::string& inputs_dir, const std::string& recon_dir) {
  PixelScores s;
  for (auto& [p, f] : sample_files(inputs_dir)) {
    auto in_path = (fs::path(inputs_dir) / p / "samples" / f).string();
    auto out_path = (fs::path(recon_dir) / p / "samples" / f).string();
    if (!fs::exists(out_path))
      fail("{}: no reconstruction of {} (run `iomm eval recon` to write both folders)", out_path, in_path);
    auto a = read_rgb(in_path), b = read_rgb(out_path);
    if (!a.sizes().equals(b.sizes()))
      fail("{} is {} but its input {} is {}", out_path, c10::str(b.sizes()), in_path, c10::str(a.sizes()));
    s.sse += (a.to(torch::kDouble) - b.to(torch::kDouble)).pow(2).sum().item<double>();
    s.values += a.numel();
    s.iou_sum += palette_iou(a, b);
    s.images += 1;
  }
  if (s.images == 0) fail("{}: no images to score", inputs_dir);
  return s;
}

// The input scenes as the generator's image conditions: [n, 3, R, R] in [-1, 1].
at::Tensor load_inputs(const std::string& dir, const std::vector<Job>& jobs, size_t start, size_t end) {
  std::vector<at::Tensor> imgs;
  for (size_t j = start; j < end; ++j) imgs.push_back(read_rgb(sample_path(dir, jobs[j].prompt, jobs[j].k)));
  return normalize_signed(torch::stack(imgs));
}

// OUT/features.safetensors: what the condition path carries for each input, for a linear probe
// (experiments/probe_condition.py): the MLLM's image tokens c_img (ViT + pixel shuffle + mlp1) and the generator's
// condition h (the query states after the frozen LLM), both unmasked. OUT/scenes.jsonl: each input's scene.
void write_features(IommModel& model, const std::vector<world::PromptSpec>& prompts, const std::vector<Job>& jobs,
                    const std::string& out, const ReconEvalOptions& o) {
  std::vector<at::Tensor> vit, queries;
  std::string scenes;
  torch::NoGradGuard no_grad;
  for (size_t start = 0; start < jobs.size(); start += size_t(o.batch)) {
    size_t end = std::min(jobs.size(), start + size_t(o.batch));
    auto images = load_inputs(out + "/inputs", jobs, start, end);
    vit.push_back(model.encode_features(images).c_img.to(torch::kCPU, torch::kFloat));
    std::vector<ConditionInput> conds;
    for (int64_t i = 0; i < images.size(0); ++i) conds.push_back({ConditionKind::image, "", images[i]});
    queries.push_back(model.condition(conds).h.to(torch::kCPU, torch::kFloat));
    for (size_t j = start; j < end; ++j) {
      const auto& p = prompts[jobs[j].prompt];
      auto scene = world::ground_truth_scene(p, jobs[j].prompt, jobs[j].k, o.scene_seed, int(model.config().resolution));
      nlohmann::ordered_json line = {{"prompt_index", jobs[j].prompt}, {"k", jobs[j].k}, {"tag", p.tag},
                                     {"prompt", p.prompt}, {"scene", world::to_json(scene)}};
      scenes += line.dump() + "\n";
    }
  }
  save_tensors(out + "/features.safetensors",
               {{"vit_tokens", torch::cat(vit).contiguous()}, {"query_states", torch::cat(queries).contiguous()}});
  write_file_atomic(out + "/scenes.jsonl", scenes);
}

}  // namespace

at::Tensor palette_classes(const at::Tensor& chw) {
  auto x = chw.to(torch::kFloat).permute({1, 2, 0}) * 255;  // [H, W, 3]
  auto grey = x.mean(-1, true);
  auto saturation = (x - grey).norm(2, -1);
  std::vector<at::Tensor> dist;
  for (auto c : world::kColors) {
    auto rgb = world::rgb(c);
    auto ref = torch::tensor({float(rgb[0]), float(rgb[1]), float(rgb[2])});
    dist.push_back((x - ref).norm(2, -1));
  }
  auto d = torch::stack(dist, -1);
  auto [dmin, arg] = d.min(-1);
  // Renders jitter the fill around the palette (a few units) and blur edges; the background is neutral grey
  // (saturation 0). These bounds keep jittered fills and drop grey and mixed edge pixels.
  auto coloured = (saturation >= 40) & (dmin <= 100);
  return torch::where(coloured, arg + 1, torch::zeros_like(arg));
}

double palette_iou(const at::Tensor& a, const at::Tensor& b) {
  auto ca = palette_classes(a), cb = palette_classes(b);
  double sum = 0;
  int n = 0;
  for (int64_t c = 1; c <= int64_t(world::kColors.size()); ++c) {
    auto in_a = ca == c, in_b = cb == c;
    auto uni = (in_a | in_b).sum().item<int64_t>();
    if (uni == 0) continue;
    sum += double((in_a & in_b).sum().item<int64_t>()) / double(uni);
    ++n;
  }
  return n ? sum / n : 1.0;
}

nlohmann::ordered_json ReconScore::to_json() const {
  nlohmann::ordered_json j;
  j["images"] = images;
  j["shapes_eval_overall"] = shapes.overall;
  nlohmann::ordered_json cats;
  for (auto& [tag, c] : shapes.categories) cats[tag] = c.score();
  j["shapes_eval"] = cats;
  j["color_iou"] = color_iou;
  j["mse"] = mse;
  j["psnr_db"] = std::isfinite(psnr) ? nlohmann::ordered_json(psnr) : nlohmann::ordered_json();
  return j;
}

ReconScore score_reconstructions(const std::string& inputs_dir, const std::string& recon_dir) {
  ReconScore s;
  auto px = pixel_scores(inputs_dir, recon_dir);
  s.mse = px.sse / double(px.values);
  s.color_iou = px.iou_sum / double(px.images);
  s.psnr = s.mse > 0 ? 10.0 * std::log10(1.0 / s.mse) : std::numeric_limits<double>::infinity();
  s.shapes = world::evaluate_folder(recon_dir);
  s.images = int64_t(s.shapes.images.size());
  return s;
}

ReconScore run_recon_eval(IommModel& model, const std::vector<world::PromptSpec>& prompts, const std::string& out,
                          const ReconEvalOptions& o) {
  if (o.per_prompt < 1) fail("eval recon: --per-prompt must be >= 1, got {}", o.per_prompt);
  if (o.batch < 1) fail("eval recon: batch must be >= 1, got {}", o.batch);
  fs::remove_all(out + "/inputs");
  fs::remove_all(out + "/recon");
  world::render_prompts(prompts, out + "/inputs", o.per_prompt, o.scene_seed, int(model.config().resolution),
                        false);
  std::vector<Job> jobs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    fs::create_directories(fmt::format("{}/recon/{:05d}/samples", out, i));
    fs::copy_file(fmt::format("{}/inputs/{:05d}/metadata.jsonl", out, i),
                  fmt::format("{}/recon/{:05d}/metadata.jsonl", out, i));
    for (int k = 0; k < o.per_prompt; ++k) jobs.push_back({i, k});
  }
  std::unique_ptr<ProgressBar> bar;
  if (o.progress) bar = std::make_unique<ProgressBar>(int64_t(jobs.size()), "reconstruct", "img");
  for (size_t start = 0; start < jobs.size(); start += size_t(o.batch)) {
    size_t end = std::min(jobs.size(), start + size_t(o.batch));
    auto images = load_inputs(out + "/inputs", jobs, start, end);
    std::vector<ConditionInput> conds;
    GenerateOptions g = o.generate;
    g.seeds.clear();
    for (size_t j = start; j < end; ++j) {
      conds.push_back({ConditionKind::image, "", images[int64_t(j - start)]});
      g.seeds.push_back(o.generate.seed + jobs[j].prompt * 1000 + uint64_t(jobs[j].k));  // independent of batching
    }
    auto recon = denormalize_signed(model.generate(conds, g)).to(torch::kCPU, torch::kFloat);
    for (size_t j = start; j < end; ++j)
      write_png(tensor_to_image(recon[int64_t(j - start)]), sample_path(out + "/recon", jobs[j].prompt, jobs[j].k));
    if (bar) bar->update(int64_t(end - start));
  }
  if (bar) bar->finish();
  if (o.features) write_features(model, prompts, jobs, out, o);
  auto s = score_reconstructions(out + "/inputs", out + "/recon");
  write_file_atomic(out + "/recon.json", s.to_json().dump(2) + "\n");
  return s;
}

}  // namespace iomm
