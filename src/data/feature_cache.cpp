#include "data/feature_cache.h"

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "core/tensor_io.h"
#include "data/webdataset.h"

namespace iomm::data {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// A required field of a manifest, with an error naming the file and the field.
template <typename T>
T field(const json& j, const char* name, const std::string& source) {
  auto it = j.find(name);
  if (it == j.end())
    fail("feature cache manifest {}: field '{}' is missing; the file is not an iomm cache manifest or is damaged: "
         "rebuild the cache with `iomm cache`",
         source, name);
  try {
    return it->get<T>();
  } catch (const json::exception& e) {
    fail("feature cache manifest {}: field '{}' has the wrong type ({}); rebuild the cache with `iomm cache`", source,
         name, e.what());
  }
}

}  // namespace

json FeatureFingerprints::to_json() const {
  return {{"autoencoder", autoencoder}, {"vision", vision},         {"tokenizer", tokenizer},
          {"text_template", text_template}, {"resolution", resolution}, {"dtype", dtype}};
}

FeatureFingerprints FeatureFingerprints::from_json(const json& j, const std::string& source) {
  FeatureFingerprints f;
  f.autoencoder = field<std::string>(j, "autoencoder", source);
  f.vision = field<std::string>(j, "vision", source);
  f.tokenizer = field<std::string>(j, "tokenizer", source);
  f.text_template = field<std::string>(j, "text_template", source);
  f.resolution = field<int64_t>(j, "resolution", source);
  f.dtype = field<std::string>(j, "dtype", source);
  return f;
}

std::vector<std::string> fingerprint_differences(const FeatureFingerprints& cache, const FeatureFingerprints& run) {
  std::vector<std::string> out;
  auto differ = [&](const char* what, const std::string& a, const std::string& b) {
    if (a != b) out.push_back(fmt::format("{} {} (this run: {})", what, a, b));
  };
  differ("autoencoder fingerprint", cache.autoencoder, run.autoencoder);
  differ("MLLM vision (InternViT + mlp1) fingerprint", cache.vision, run.vision);
  differ("tokenizer fingerprint", cache.tokenizer, run.tokenizer);
  differ("text template fingerprint", cache.text_template, run.text_template);
  differ("resolution", std::to_string(cache.resolution), std::to_string(run.resolution));
  differ("dtype", cache.dtype, run.dtype);
  return out;
}

std::vector<std::pair<std::string, std::string>> feature_members(const FeatureSample& s) {
  std::map<std::string, at::Tensor> t{{"latents", s.latents}, {"c_img", s.c_img}};
  if (s.input_ids.defined()) t["input_ids"] = s.input_ids;
  std::vector<std::pair<std::string, std::string>> out{{kFeatureMember, tensors_to_bytes(t)}};
  if (s.caption) out.emplace_back("txt", *s.caption);
  return out;
}

FeatureSample read_feature_sample(const Sample& s) {
  auto where = fmt::format("{}: sample '{}'", s.shard, s.key);
  const auto& bytes = s.members.at(kFeatureMember);
  auto t = tensors_from_bytes(std::string(bytes.begin(), bytes.end()), where + " ." + kFeatureMember);
  FeatureSample out;
  out.key = s.key;
  for (const char* name : {"latents", "c_img"}) {
    if (!t.count(name))
      fail("{} has no tensor '{}' in its .{}: the shard is not an iomm feature cache; rebuild it with `iomm cache`",
           where, name, kFeatureMember);
  }
  out.latents = t.at("latents");
  out.c_img = t.at("c_img");
  if (t.count("input_ids")) out.input_ids = t.at("input_ids");
  out.caption = s.text("txt");
  return out;
}

json FeatureManifest::to_json() const {
  FeatureManifest t = *this;  // the totals as the shards give them
  t.total();
  json shards_j = json::array();
  for (const auto& s : shards)
    shards_j.push_back({{"name", s.name}, {"samples", s.samples}, {"captions", s.captions},
                        {"truncated_captions", s.truncated_captions}, {"bad_captions", s.bad_captions},
                        {"skipped", s.skipped}, {"partial", s.partial}});
  return {{"format", kFeatureCacheFormat},
          {"version", kFeatureCacheVersion},
          {"fingerprints", fingerprints.to_json()},
          {"preprocess", preprocess},
          {"latent", latent},
          {"latent_scale", latent_scale},
          {"latent_shift", latent_shift},
          {"shapes", {{"latents", latent_shape}, {"c_img", c_img_shape}, {"input_ids", "[L] int64, per caption"}}},
          {"source", source},
          {"unit", unit},
          {"input_units", input_units},
          {"rank", rank},
          {"world_size", world_size},
          {"limit", limit},
          {"finished", finished},
          {"counts", {{"samples", t.samples}, {"captions", t.captions}, {"truncated_captions", t.truncated_captions},
                      {"bad_captions", t.bad_captions}, {"skipped", t.skipped}}},
          {"shards", shards_j}};
}

FeatureManifest FeatureManifest::from_json(const json& j, const std::string& src) {
  if (field<std::string>(j, "format", src) != kFeatureCacheFormat || field<int>(j, "version", src) != kFeatureCacheVersion)
    fail("feature cache manifest {}: format {} version {} is not {} version {}; rebuild the cache with this iomm's "
         "`iomm cache`",
         src, j.value("format", "?"), j.value("version", -1), kFeatureCacheFormat, kFeatureCacheVersion);
  FeatureManifest m;
  m.fingerprints = FeatureFingerprints::from_json(field<json>(j, "fingerprints", src), src);
  m.preprocess = field<std::string>(j, "preprocess", src);
  m.latent = field<std::string>(j, "latent", src);
  m.latent_scale = field<double>(j, "latent_scale", src);
  m.latent_shift = field<double>(j, "latent_shift", src);
  auto shapes = field<json>(j, "shapes", src);
  m.latent_shape = field<std::vector<int64_t>>(shapes, "latents", src);
  m.c_img_shape = field<std::vector<int64_t>>(shapes, "c_img", src);
  m.source = field<std::string>(j, "source", src);
  m.unit = field<std::string>(j, "unit", src);
  m.input_units = field<int64_t>(j, "input_units", src);
  m.rank = field<int64_t>(j, "rank", src);
  m.world_size = field<int64_t>(j, "world_size", src);
  m.limit = field<int64_t>(j, "limit", src);
  m.finished = field<bool>(j, "finished", src);
  for (const auto& s : field<json>(j, "shards", src)) {
    CacheShard c;
    c.name = field<std::string>(s, "name", src);
    c.samples = field<int64_t>(s, "samples", src);
    c.captions = field<int64_t>(s, "captions", src);
    c.truncated_captions = field<int64_t>(s, "truncated_captions", src);
    c.bad_captions = s.value("bad_captions", int64_t{0});  // absent in caches made before it was counted
    c.skipped = field<std::map<std::string, int64_t>>(s, "skipped", src);
    c.partial = field<bool>(s, "partial", src);
    m.shards.push_back(std::move(c));
  }
  m.total();
  return m;
}

void FeatureManifest::total() {
  samples = captions = truncated_captions = bad_captions = 0;
  skipped.clear();
  for (const auto& s : shards) {
    samples += s.samples;
    captions += s.captions;
    truncated_captions += s.truncated_captions;
    bad_captions += s.bad_captions;
    for (const auto& [cause, n] : s.skipped) skipped[cause] += n;
  }
}

std::string manifest_path(const std::string& dir, int64_t rank, int64_t world_size) {
  if (world_size <= 1) return (fs::path(dir) / "manifest.json").string();
  return (fs::path(dir) / fmt::format("manifest.rank-{}.json", rank)).string();
}

void write_manifest(const std::string& dir, const FeatureManifest& m) {
  write_file_atomic(manifest_path(dir, m.rank, m.world_size), m.to_json().dump(1) + "\n");
}

std::optional<FeatureManifest> read_manifest(const std::string& path) {
  if (!fs::exists(path)) return std::nullopt;
  json j;
  try {
    j = json::parse(read_file(path));
  } catch (const json::exception& e) {
    fail("feature cache manifest {} is not valid JSON ({}); rebuild the cache with `iomm cache`", path, e.what());
  }
  return FeatureManifest::from_json(j, path);
}

namespace {

// Every rank's part: manifest.json alone, or manifest.rank-R.json for R < W (W from the first part found).
std::vector<FeatureManifest> read_parts(const std::string& dir) {
  if (auto single = read_manifest(manifest_path(dir, 0, 1))) return {*single};
  std::optional<FeatureManifest> first;
  for (int64_t r = 0; r < 4096 && !first; ++r) first = read_manifest(manifest_path(dir, r, 2));
  if (!first)
    fail("'{}' is not a feature cache: it has no manifest.json nor manifest.rank-R.json; make one with `iomm cache "
         "--model M --data SHARDS --out {}`",
         dir, dir);
  std::vector<FeatureManifest> parts;
  for (int64_t r = 0; r < first->world_size; ++r) {
    auto part = read_manifest(manifest_path(dir, r, first->world_size));
    if (!part)
      fail("feature cache {}: manifest.rank-{}.json is missing (the cache was made by {} ranks): run `iomm cache "
           "... --rank {} --world-size {}` to finish it",
           dir, r, first->world_size, r, first->world_size);
    parts.push_back(*part);
  }
  return parts;
}

// All parts finished, of one world size, with one set of fingerprints and shapes; every shard present.
void check_parts(const std::string& dir, const std::vector<FeatureManifest>& parts) {
  const auto& p0 = parts.front();
  for (const auto& p : parts) {
    auto path = manifest_path(dir, p.rank, p.world_size);
    if (!p.finished)
      fail("feature cache {}: {} is unfinished (rank {} of {} was interrupted): rerun the same `iomm cache` command "
           "to resume it",
           dir, path, p.rank, p.world_size);
    if (p.world_size != p0.world_size)
      fail("feature cache {}: {} says {} ranks but rank {}'s part says {}; the directory mixes two caches: rebuild it",
           dir, path, p.world_size, p0.rank, p0.world_size);
    auto diff = fingerprint_differences(p0.fingerprints, p.fingerprints);
    if (!diff.empty() || p.latent_shape != p0.latent_shape || p.c_img_shape != p0.c_img_shape)
      fail("feature cache {}: rank {} was made with other models than rank {} ({}); rebuild it", dir, p.rank, p0.rank,
           diff.empty() ? std::string("shapes differ") : fmt::format("{}", fmt::join(diff, "; ")));
    for (const auto& s : p.shards)
      if (!fs::exists(fs::path(dir) / s.name))
        fail("feature cache {}: shard {} listed in {} is missing; rerun `iomm cache` to rebuild it", dir, s.name, path);
  }
}

}  // namespace

FeatureCache FeatureCache::open(const std::string& dir) {
  if (!fs::is_directory(dir))
    fail("feature cache '{}' does not exist or is not a directory; make it with `iomm cache --out {}`", dir, dir);
  FeatureCache c;
  c.dir_ = dir;
  c.parts_ = read_parts(dir);
  check_parts(dir, c.parts_);
  return c;
}

void FeatureCache::validate(const FeatureFingerprints& run) const {
  auto diff = fingerprint_differences(fingerprints(), run);
  if (diff.empty()) return;
  fail("feature cache {} was made with {}: its features do not belong to this model; rebuild it with `iomm cache "
       "--model M --data SHARDS --out DIR` for this model, or train without the cache",
       dir_, fmt::join(diff, "; "));
}

std::vector<std::string> FeatureCache::shard_paths() const {
  std::vector<std::string> names;
  for (const auto& p : parts_)
    for (const auto& s : p.shards) names.push_back(s.name);
  std::sort(names.begin(), names.end());  // NNNNNN is the input unit: input order over all ranks
  for (auto& n : names) n = (fs::path(dir_) / n).string();
  return names;
}

bool is_feature_cache(const std::string& spec) {
  std::error_code ec;
  if (!fs::is_directory(spec, ec)) return false;
  if (fs::exists(fs::path(spec) / "manifest.json")) return true;
  for (const auto& e : fs::directory_iterator(spec, ec)) {
    auto name = e.path().filename().string();
    if (name.rfind("manifest.rank-", 0) == 0 && e.path().extension() == ".json") return true;
  }
  return false;
}

DataSource FeatureCache::source() const {
  DataSource src;
  src.spec = dir_;
  src.required_member = kFeatureMember;
  for (auto& p : shard_paths()) src.units.push_back({p, {}});
  return src;
}

SkipCounts FeatureCache::build_skips() const {
  SkipCounts c;
  for (const auto& p : parts_)
    for (const auto& shard : p.shards)
      for (const auto& [cause, n] : shard.skipped)
        c.add(cause, fmt::format("{}'s input unit, when `iomm cache` built it", shard.name), n);
  return c;
}

int64_t FeatureCache::samples() const {
  int64_t n = 0;
  for (const auto& p : parts_) n += p.samples;
  return n;
}

FeatureCacheReader::FeatureCacheReader(const FeatureCache& cache)
    : reader_(std::make_unique<WebDatasetReader>(cache.shard_paths(), kFeatureMember)) {}
FeatureCacheReader::~FeatureCacheReader() = default;

bool FeatureCacheReader::next(FeatureSample& out) {
  Sample s;
  if (!reader_->next(s)) return false;
  out = read_feature_sample(s);
  return true;
}

}  // namespace iomm::data
