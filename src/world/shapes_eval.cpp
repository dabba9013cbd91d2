#include "world/shapes_eval.h"

#include <algorithm>
#include <charconv>
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

namespace {

const char* label(const char* s) { return s; }
const char* label(Shape s) { return name(s); }
const char* label(Color c) { return name(c); }

template <typename T, size_t N>
std::string names_of(const std::array<T, N>& xs) {
  std::string out;
  for (const auto& x : xs) out += (out.empty() ? "" : ", ") + std::string(label(x));
  return out;
}

}  // namespace

// GenEval's own metadata can ask for any COCO class; ShapesEval refuses what its detector cannot see instead of
// counting it as a failed image, and a tag outside its six categories instead of adding one to the overall mean.
void check_judgeable(const PromptSpec& p, const std::string& where) {
  if (std::find(kTags.begin(), kTags.end(), p.tag) == kTags.end())
    fail("{}: field 'tag' is '{}', which is not a ShapesEval category; use one of {} (another tag would add a "
         "category to the overall mean)",
         where, p.tag, names_of(kTags));
  if (p.include.empty())
    fail("{}: field 'include' is empty, so every image would pass; list the objects the prompt asks for, e.g. "
         "[{{\"class\": \"circle\", \"count\": 1}}]",
         where);
  auto check = [&](const std::vector<Requirement>& rs, const char* list) {
    for (size_t i = 0; i < rs.size(); ++i) {
      const bool shape = std::any_of(kShapes.begin(), kShapes.end(), [&](Shape x) { return rs[i].cls == name(x); });
      if (!shape)
        fail("{}: field '{}[{}].class' is '{}'; ShapesEval detects only {} (lower case): fix the class", where, list,
             i, rs[i].cls, names_of(kShapes));
      const auto& c = rs[i].color;
      if (c && std::none_of(kColors.begin(), kColors.end(), [&](Color x) { return *c == name(x); }))
        fail("{}: field '{}[{}].color' is '{}'; ShapesEval tells only {} (lower case): fix the colour", where, list,
             i, *c, names_of(kColors));
    }
  };
  check(p.include, "include");
  check(p.exclude, "exclude");
}

namespace {

// The numbered prompt folders by index. Two names for one index (00003 and 000003) would score prompt 3 twice.
std::map<int, fs::path> prompt_folders(const std::string& dir) {
  static const std::regex digits(R"(\d+)");
  std::map<int, fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (!e.is_directory() || !std::regex_match(n, digits)) continue;
    int index = 0;
    if (std::from_chars(n.data(), n.data() + n.size(), index).ec != std::errc())
      fail("eval shapes: '{}': the folder number is too large for a prompt index; name prompt folders 00000, "
           "00001, ... as GenEval does",
           e.path().string());
    auto [it, fresh] = out.emplace(index, e.path());
    if (!fresh)
      fail("eval shapes: '{}' and '{}' are both prompt {}: keep one folder per prompt (GenEval's name is {:05d})",
           it->second.string(), e.path().string(), index, index);
  }
  if (out.empty())
    fail("eval shapes: '{}' has no numbered prompt folders (<00000>/metadata.jsonl + samples/<0000>.png); "
         "make them with `iomm world render` or your generator", dir);
  return out;
}

// A folder's one prompt, checked to be one that ShapesEval can judge.
PromptSpec folder_prompt(const fs::path& folder) {
  const auto meta = folder / "metadata.jsonl";
  if (!fs::is_regular_file(meta)) fail("eval shapes: '{}' is missing", meta.string());
  auto prompts = read_prompts_with_lines(meta.string());
  if (prompts.size() > 1)
    fail("eval shapes: {}:{}: a second prompt; GenEval's layout has one prompt per numbered folder, so only the "
         "first would be scored: move it to a folder of its own",
         meta.string(), prompts[1].first);
  check_judgeable(prompts[0].second, fmt::format("{}:{}", meta.string(), prompts[0].first));
  return std::move(prompts[0].second);
}

std::vector<fs::path> folder_samples(const fs::path& folder) {
  static const std::regex png(R"(\d+\.png)");
  std::vector<fs::path> samples;
  if (fs::is_directory(folder / "samples"))
    for (const auto& e : fs::directory_iterator(folder / "samples"))
      if (e.is_regular_file() && std::regex_match(e.path().filename().string(), png)) samples.push_back(e.path());
  if (samples.empty())
    fail("eval shapes: '{}' holds no <0000>.png samples, so this prompt would be left out of every score: generate "
         "its images, or remove the folder '{}'",
         (folder / "samples").string(), folder.string());
  std::sort(samples.begin(), samples.end());
  return samples;
}

}  // namespace

EvalResult evaluate_folder(const std::string& dir, const DetectorParams& params) {
  if (!fs::is_directory(dir))
    fail("eval shapes: '{}' is not a directory: pass the folder with <00000>/metadata.jsonl and samples/", dir);
  struct Folder {
    int index;
    PromptSpec prompt;
    std::vector<fs::path> samples;
  };
  std::vector<Folder> folders;  // every folder checked before the first image is scored
  for (const auto& [index, path] : prompt_folders(dir))
    folders.push_back({index, folder_prompt(path), folder_samples(path)});
  EvalResult r;
  for (const auto& f : folders) {
    for (const auto& s : f.samples) {
      ImageRecord rec;
      rec.file = fs::relative(s, dir).string();
      rec.prompt_index = f.index;
      rec.tag = f.prompt.tag;
      rec.prompt = f.prompt.prompt;
      const SceneReading scene = read_scene(to_raster(decode_image(s.string())), params);
      rec.verdict = judge(f.prompt, scene, params);
      rec.detections = scene.objects;
      rec.stray = scene.stray;
      r.images.push_back(std::move(rec));
    }
  }
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
