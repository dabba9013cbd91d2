#include "world/shapes_eval.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <regex>

#include <fmt/format.h>

#include "core/error.h"
#include "data/image.h"
#include "world/corpus.h"

namespace fs = std::filesystem;

namespace iomm::world {

Verdict judge(const PromptSpec& p, const std::vector<Detection>& detections) {
  // Objects per class, most confident first (detect() returns them sorted).
  std::map<std::string, std::vector<const Detection*>> objects;
  for (const auto& d : detections) objects[name(d.shape)].push_back(&d);
  auto found_of = [&](const std::string& cls) {
    auto it = objects.find(cls);
    return it == objects.end() ? std::vector<const Detection*>{} : it->second;
  };

  Verdict v{true, ""};
  auto fail_because = [&](std::string why) {
    v.correct = false;
    v.reason += (v.reason.empty() ? "" : "\n") + why;
  };
  std::vector<std::optional<std::vector<const Detection*>>> matched_groups;
  for (const auto& req : p.include) {
    auto found = found_of(req.cls);
    bool matched = true;
    if (int(found.size()) < req.count) {
      matched = false;
      fail_because(fmt::format("expected {}>={}, found {}", req.cls, req.count, found.size()));
    } else {
      found.resize(size_t(req.count));
      if (req.color) {
        const int ok = int(std::count_if(found.begin(), found.end(),
                                         [&](const Detection* d) { return name(d->color) == *req.color; }));
        if (ok < req.count) {
          matched = false;
          std::string seen;
          for (Color c : kColors) {
            const auto n = std::count_if(found.begin(), found.end(), [&](const Detection* d) { return d->color == c; });
            if (n) seen += fmt::format("{}{} {}", seen.empty() ? "" : ", ", n, name(c));
          }
          fail_because(fmt::format("expected {} {}>={}, found {} {}; and {}", *req.color, req.cls, req.count, ok,
                                   *req.color, seen));
        }
      }
      if (req.position && matched) {
        const auto& [rel, target] = *req.position;
        if (target < 0 || target >= int(matched_groups.size()) || !matched_groups[size_t(target)]) {
          matched = false;
          fail_because(fmt::format("no target for {} to be {}", req.cls, rel));
        } else {
          for (const Detection* obj : found) {
            for (const Detection* t : *matched_groups[size_t(target)]) {
              const auto rels = relative_position(obj->bbox, t->bbox, 0.1);
              if (!rels.count(rel)) {
                matched = false;
                std::string got;
                for (const auto& r : rels) got += (got.empty() ? "" : " and ") + r;
                fail_because(fmt::format("expected {} {} target, found {} target", req.cls, rel, got));
                break;
              }
            }
            if (!matched) break;
          }
        }
      }
    }
    if (matched) matched_groups.emplace_back(std::move(found));
    else matched_groups.emplace_back(std::nullopt);
  }
  for (const auto& req : p.exclude) {
    const auto n = found_of(req.cls).size();
    if (int(n) >= req.count) fail_because(fmt::format("expected {}<{}, found {}", req.cls, req.count, n));
  }
  return v;
}

Verdict judge(const PromptSpec& p, const SceneReading& scene, const DetectorParams& params) {
  if (!scene.readable)
    return {false, fmt::format("unreadable scene: {:.0f}% stray pixels (colour outside any detection or grey off the "
                               "background level; at most {:.0f}%)",
                               100 * scene.stray, 100 * params.max_stray)};
  return judge(p, scene.objects);
}

void summarize(EvalResult& r) {
  r.categories.clear();
  std::map<int, bool> prompt_ok;
  for (const auto& im : r.images) {
    auto& c = r.categories[im.tag];
    ++c.total;
    c.correct += im.verdict.correct;
    prompt_ok[im.prompt_index] |= im.verdict.correct;
  }
  double sum = 0;
  for (const auto& [tag, c] : r.categories) sum += c.score();
  r.overall = r.categories.empty() ? 0 : sum / double(r.categories.size());
  const auto good = std::count_if(prompt_ok.begin(), prompt_ok.end(), [](const auto& kv) { return kv.second; });
  r.correct_prompts = prompt_ok.empty() ? 0 : double(good) / double(prompt_ok.size());
}

nlohmann::ordered_json EvalResult::to_json() const {
  nlohmann::ordered_json cats = nlohmann::ordered_json::object();
  for (const char* tag : kTags)  // GenEval's category order first, then any others
    if (auto it = categories.find(tag); it != categories.end())
      cats[tag] = {{"score", it->second.score()}, {"correct", it->second.correct}, {"total", it->second.total}};
  for (const auto& [tag, c] : categories)
    if (!cats.contains(tag)) cats[tag] = {{"score", c.score()}, {"correct", c.correct}, {"total", c.total}};
  nlohmann::ordered_json imgs = nlohmann::ordered_json::array();
  for (const auto& im : images) {
    nlohmann::ordered_json dets = nlohmann::ordered_json::array();
    for (const auto& d : im.detections) dets.push_back(world::to_json(d));
    imgs.push_back(nlohmann::ordered_json{{"filename", im.file}, {"prompt_index", im.prompt_index}, {"tag", im.tag}, {"prompt", im.prompt},
                    {"correct", im.verdict.correct}, {"reason", im.verdict.reason},
                    {"stray", std::round(im.stray * 1000) / 1000}, {"detections", dets}});
  }
  nlohmann::ordered_json j{{"overall", overall},
                           {"categories", cats},
                           {"total_images", images.size()},
                           {"correct_prompts", correct_prompts},
                           {"images", imgs}};
  return j;
}

EvalResult evaluate_folder(const std::string& dir, const DetectorParams& params) {
  if (!fs::is_directory(dir))
    fail("eval shapes: '{}' is not a directory: pass the folder with <00000>/metadata.jsonl and samples/", dir);
  std::vector<fs::path> prompt_dirs;
  static const std::regex digits(R"(\d+)"), png(R"(\d+\.png)");
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && std::regex_match(e.path().filename().string(), digits)) prompt_dirs.push_back(e.path());
  std::sort(prompt_dirs.begin(), prompt_dirs.end());
  if (prompt_dirs.empty())
    fail("eval shapes: '{}' has no numbered prompt folders (<00000>/metadata.jsonl + samples/<0000>.png); "
         "make them with `iomm world render` or your generator", dir);
  EvalResult r;
  for (const auto& pd : prompt_dirs) {
    const auto meta = pd / "metadata.jsonl";
    if (!fs::is_regular_file(meta)) fail("eval shapes: '{}' is missing", meta.string());
    const auto prompts = read_prompts(meta.string());
    const PromptSpec& p = prompts.front();
    std::vector<fs::path> samples;
    if (fs::is_directory(pd / "samples"))
      for (const auto& e : fs::directory_iterator(pd / "samples"))
        if (e.is_regular_file() && std::regex_match(e.path().filename().string(), png)) samples.push_back(e.path());
    std::sort(samples.begin(), samples.end());
    for (const auto& s : samples) {
      ImageRecord rec;
      rec.file = fs::relative(s, dir).string();
      rec.prompt_index = std::stoi(pd.filename().string());
      rec.tag = p.tag;
      rec.prompt = p.prompt;
      const SceneReading scene = read_scene(to_raster(decode_image(s.string())), params);
      rec.verdict = judge(p, scene, params);
      rec.detections = scene.objects;
      rec.stray = scene.stray;
      r.images.push_back(std::move(rec));
    }
  }
  if (r.images.empty()) fail("eval shapes: no samples/<0000>.png images under '{}'", dir);
  summarize(r);
  return r;
}

void write_grid(const EvalResult& r, const std::string& dir, const std::string& png_path) {
  if (r.images.empty()) fail("eval shapes: no images for the grid");
  std::vector<Raster> tiles;
  int tw = 0, th = 0;
  for (const auto& im : r.images) {
    tiles.push_back(to_raster(decode_image((fs::path(dir) / im.file).string())));
    tw = std::max(tw, tiles.back().width);
    th = std::max(th, tiles.back().height);
  }
  constexpr int kFrame = 2, kGap = 1;
  const int n = int(tiles.size());
  const int cols = int(std::ceil(std::sqrt(double(n))));
  const int rows = (n + cols - 1) / cols;
  const int cw = tw + 2 * kFrame + kGap, ch = th + 2 * kFrame + kGap;
  Image grid(cols * cw + kGap, rows * ch + kGap, 3);
  std::fill(grid.pixels.begin(), grid.pixels.end(), uint8_t(255));
  for (int i = 0; i < n; ++i) {
    const int ox = kGap + (i % cols) * cw, oy = kGap + (i / cols) * ch;
    const uint8_t mark[3] = {uint8_t(r.images[size_t(i)].verdict.correct ? 0 : 220),
                             uint8_t(r.images[size_t(i)].verdict.correct ? 180 : 0), 0};
    for (int y = 0; y < th + 2 * kFrame; ++y)
      for (int x = 0; x < tw + 2 * kFrame; ++x)
        for (int c = 0; c < 3; ++c) grid.at(ox + x, oy + y, c) = mark[c];
    const Raster& t = tiles[size_t(i)];
    for (int y = 0; y < t.height; ++y)
      for (int x = 0; x < t.width; ++x)
        for (int c = 0; c < 3; ++c) grid.at(ox + kFrame + x, oy + kFrame + y, c) = t.at(x, y)[c];
  }
  write_png(grid, png_path);
}

}  // namespace iomm::world
