#include "world/corpus.h"

#include <chrono>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/progress.h"
#include "core/fs.h"
#include "data/webdataset.h"
#include "world/captions.h"

namespace fs = std::filesystem;

namespace iomm::world {

Image to_image(const Raster& r) {
  Image img(r.width, r.height, 3);
  img.pixels = r.pixels;
  return img;
}

Raster to_raster(const Image& img) {
  Raster r(img.width, img.height);
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      for (int c = 0; c < 3; ++c) r.at(x, y)[c] = img.at(x, y, img.channels >= 3 ? c : 0);
  return r;
}

namespace {

std::string png_bytes(const Scene& s) {
  const auto v = encode_png(to_image(render(s)));
  return {v.begin(), v.end()};
}

void check_options(const CorpusOptions& o) {
  if (o.out.empty()) fail("world make: --out DIR is required");
  if (o.size < 32 || o.size > 64) fail("world make: --size must be 32..64, got {}", o.size);
  if (o.image_only < 0 || o.captioned < 0) fail("world make: pool sizes must be >= 0");
  if (o.shard_size < 1) fail("world make: --shard-size must be >= 1, got {}", o.shard_size);
}

}  // namespace

CorpusReport make_corpus(const CorpusOptions& o) {
  check_options(o);
  const auto t0 = std::chrono::steady_clock::now();
  CorpusReport rep;
  const fs::path out(o.out);
  fs::create_directories(out);
  {
    ProgressBar bar(o.image_only + o.captioned, "world make", "img");
    if (!o.progress) bar.plain_interval_s = 1e9;
    data::WebDatasetWriter images((out / "image").string(), o.shard_size);
    std::string index;
    for (int64_t i = 0; i < o.image_only; ++i) {
      const std::string key = fmt::format("{:09d}", i);
      const std::string shard = images.write(key, {{"png", png_bytes(make_unlabeled(o.seed, uint64_t(i), o.size))}});
      index += nlohmann::json{{"shard", shard}, {"key", key}}.dump() + "\n";
      bar.update();
    }
    images.close();
    write_file_atomic((out / "image" / "index.jsonl").string(), index);
    rep.images = o.image_only;

    data::WebDatasetWriter captioned((out / "captioned").string(), o.shard_size);
    index.clear();
    for (int64_t i = 0; i < o.captioned; ++i) {
      const std::string key = fmt::format("{:09d}", i);
      const CaptionedSample s = make_captioned(o.seed, uint64_t(i), o.size);
      nlohmann::ordered_json meta{{"tag", s.spec.tag}, {"caption", s.spec.prompt}, {"metadata", to_json(s.spec)},
                                  {"scene", to_json(s.scene)}};
      const std::string shard =
          captioned.write(key, {{"png", png_bytes(s.scene)}, {"txt", s.spec.prompt}, {"json", meta.dump()}});
      index += nlohmann::ordered_json{{"shard", shard}, {"key", key}, {"tag", s.spec.tag}, {"caption", s.spec.prompt}}
                   .dump() +
               "\n";
      bar.update();
    }
    captioned.close();
    write_file_atomic((out / "captioned" / "index.jsonl").string(), index);
    rep.captioned = o.captioned;
    bar.finish();
  }
  fs::create_directories(out / "image");
  fs::create_directories(out / "captioned");
  for (const char* set : kBuiltinSets)
    write_prompts(builtin_prompts(set), (out / "prompts" / (std::string(set) + ".jsonl")).string());

  nlohmann::ordered_json manifest{{"generator", "iomm world make"},
                                  {"seed", o.seed},
                                  {"size", o.size},
                                  {"image_only", o.image_only},
                                  {"captioned", o.captioned},
                                  {"shard_size", o.shard_size},
                                  {"classes", nlohmann::json::array()},
                                  {"colors", nlohmann::json::array()},
                                  {"heldout_color_pairs", heldout_color_pairs()}};
  for (Shape s : kShapes) manifest["classes"].push_back(name(s));
  for (Color c : kColors) manifest["colors"].push_back(name(c));
  write_file_atomic((out / "world.json").string(), manifest.dump(2) + "\n");
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

Scene ground_truth_scene(const PromptSpec& p, size_t prompt_index, int k, uint64_t seed, int size) {
  Rng rng(seed, hash_name("render"), (uint64_t(prompt_index) << 20) | uint64_t(k));
  return layout(slots_for_prompt(p, rng), size, rng);
}

void render_prompts(const std::vector<PromptSpec>& prompts, const std::string& out, int per_prompt, uint64_t seed,
                    int size, bool progress) {
  if (per_prompt < 1) fail("world render: --per-prompt must be >= 1, got {}", per_prompt);
  if (size < 32 || size > 64) fail("world render: --size must be 32..64, got {}", size);
  ProgressBar bar(int64_t(prompts.size()) * per_prompt, "world render", "img");
  if (!progress) bar.plain_interval_s = 1e9;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const fs::path dir = fs::path(out) / fmt::format("{:05d}", i);
    fs::create_directories(dir / "samples");
    write_file_atomic((dir / "metadata.jsonl").string(), to_json(prompts[i]).dump() + "\n");
    for (int k = 0; k < per_prompt; ++k) {
      write_png(to_image(render(ground_truth_scene(prompts[i], i, k, seed, size))),
                (dir / "samples" / fmt::format("{:04d}.png", k)).string());
      bar.update();
    }
  }
  bar.finish();
}

}  // namespace iomm::world
