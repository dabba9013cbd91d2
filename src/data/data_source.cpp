#include "data/data_source.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_limits.h"
#include "data/feature_cache.h"

namespace iomm::data {

namespace fs = std::filesystem;

std::string DataUnit::name() const {
  if (!shard.empty()) return shard;
  if (files.empty()) return "(no files)";
  return files.size() == 1 ? files[0].path : fmt::format("{} (+{} files)", files[0].path, files.size() - 1);
}

void SkipCounts::add(const std::string& cause, const std::string& example, int64_t n) {
  if (n <= 0) return;
  if (count[cause] == 0 && !first.count(cause)) first[cause] = example;
  count[cause] += n;
}

void SkipCounts::merge(const SkipCounts& o) {
  for (auto& [cause, n] : o.count) add(cause, o.first.count(cause) ? o.first.at(cause) : "", n);
}

int64_t SkipCounts::total() const {
  int64_t t = 0;
  for (auto& [c, n] : count) t += n;
  return t;
}

std::string SkipCounts::summary() const {
  std::string s;
  for (auto& [cause, n] : count) {
    if (!n) continue;
    if (!s.empty()) s += ", ";
    s += fmt::format("{} {} (first: {})", n, cause, first.count(cause) ? first.at(cause) : "?");
  }
  return s.empty() ? "none" : s;
}

namespace {

bool is_folder_of_images(const std::string& spec) {
  if (!fs::is_directory(spec)) return false;
  for (auto& e : fs::directory_iterator(spec))
    if (e.path().extension() == ".tar") return false;
  return true;
}

void add_file_units(DataSource& src, std::vector<ImageFile> files) {
  for (size_t i = 0; i < files.size(); i += size_t(src.files_per_unit)) {
    DataUnit u;
    auto end = std::min(files.size(), i + size_t(src.files_per_unit));
    u.files.assign(std::make_move_iterator(files.begin() + long(i)), std::make_move_iterator(files.begin() + long(end)));
    src.units.push_back(std::move(u));
  }
}

void open_folder(DataSource& src) {
  ImageFolderReader listing(src.spec);  // its sorted, recursive listing of image files
  std::vector<ImageFile> files;
  for (const auto& p : listing.files())
    files.push_back({p, fs::relative(p, src.spec).replace_extension().string(), std::nullopt});
  if (files.empty()) fail("image folder '{}' has no jpg, jpeg, png or webp files", src.spec);
  add_file_units(src, std::move(files));
}

std::optional<std::string> caption_field(const nlohmann::json& j) {
  for (const char* f : {"caption", "text", "prompt"})
    if (j.contains(f) && j[f].is_string()) return j[f].get<std::string>();
  return std::nullopt;
}

void open_jsonl(DataSource& src) {
  std::ifstream in(src.spec);
  if (!in) fail("cannot read the data index '{}'", src.spec);
  const fs::path dir = fs::path(src.spec).parent_path();
  std::vector<ImageFile> files;
  std::vector<std::string> shards;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto where = fmt::format("{} line {}", src.spec, n);
    check_json_nesting(line, where);
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) fail("{}: not a JSON object", where);
    if (j.contains("image") && j["image"].is_string()) {
      auto p = (dir / j["image"].get<std::string>()).string();
      files.push_back({p, fs::path(j["image"].get<std::string>()).replace_extension().string(), caption_field(j)});
    } else if (j.contains("shard") && j["shard"].is_string()) {
      auto p = (dir / j["shard"].get<std::string>()).string();
      if (std::find(shards.begin(), shards.end(), p) == shards.end()) shards.push_back(p);
    } else {
      fail("{} line {}: each line needs an \"image\" (a file path) or a \"shard\" (a .tar path) field", src.spec, n);
    }
  }
  if (!files.empty() && !shards.empty())
    fail("{}: mixes \"image\" and \"shard\" lines; use one kind per index", src.spec);
  for (auto& s : shards) {
    if (!fs::is_regular_file(s)) fail("{}: shard '{}' does not exist", src.spec, s);
    src.units.push_back({s, {}});
  }
  add_file_units(src, std::move(files));
  if (src.units.empty()) fail("data index '{}' lists no images or shards", src.spec);
}

void open_shard_list(DataSource& src) {
  std::ifstream in(src.spec);
  if (!in) fail("cannot read the shard list '{}'", src.spec);
  const fs::path dir = fs::path(src.spec).parent_path();
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    auto a = line.find_first_not_of(" \t\r"), b = line.find_last_not_of(" \t\r");
    if (a == std::string::npos || line[a] == '#') continue;
    fs::path p = line.substr(a, b - a + 1);
    if (p.is_relative()) p = dir / p;
    if (!fs::is_regular_file(p))
      fail("{} line {}: shard '{}' does not exist; fix the path or remove the line", src.spec, n, p.string());
    src.units.push_back({p.string(), {}});
  }
  if (src.units.empty()) fail("shard list '{}' names no shards", src.spec);
}

std::string ext_of(const std::string& spec) { return fs::path(spec).extension().string(); }

}  // namespace

DataSource DataSource::open(const std::string& spec, int64_t files_per_unit) {
  DataSource src;
  src.spec = spec;
  src.files_per_unit = std::max<int64_t>(1, files_per_unit);
  if (!fs::exists(spec) && spec.find('{') == std::string::npos)
    fail("training data '{}' does not exist; give a .tar shard, a directory of shards or of images, a brace range "
         "like dir/shard-{{000000..000009}}.tar, a .txt list of shards or a .jsonl index",
         spec);
  if (is_feature_cache(spec))  // its shards hold features, not images: every sample would be skipped as no_image
    fail("'{}' is a feature cache made by `iomm cache`, not images: only a generator stage's streaming loader reads "
         "one (data.images / data.pairs); here give the images it was made from",
         spec);
  if (is_folder_of_images(spec)) open_folder(src);
  else if (ext_of(spec) == ".jsonl") open_jsonl(src);
  else if (ext_of(spec) == ".txt") open_shard_list(src);
  else
    for (auto& s : expand_shards(spec)) src.units.push_back({s, {}});
  return src;
}

namespace {

void read_file_unit(const DataUnit& unit, SkipCounts& skips, const std::function<void(Sample&&)>& emit) {
  for (const auto& f : unit.files) {
    std::ifstream in(f.path, std::ios::binary);
    if (!in) {
      skips.add("missing_file", f.path);
      continue;
    }
    Sample s;
    s.shard = f.path;
    s.key = f.key;
    auto ext = fs::path(f.path).extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    s.members[ext.empty() ? "" : ext.substr(1)] = {std::istreambuf_iterator<char>(in), {}};
    if (f.caption) {
      s.members["txt"].assign(f.caption->begin(), f.caption->end());
    } else if (std::ifstream txt(fs::path(f.path).replace_extension(".txt"), std::ios::binary); txt) {
      s.members["txt"] = {std::istreambuf_iterator<char>(txt), {}};
    }
    if (!s.image()) {
      skips.add("no_image", f.path);
      continue;
    }
    emit(std::move(s));
  }
}

}  // namespace

void read_unit(const DataUnit& unit, SkipCounts& skips, const std::function<void(Sample&&)>& emit,
               const std::string& required_member) {
  if (unit.shard.empty()) return read_file_unit(unit, skips, emit);
  WebDatasetReader r({unit.shard}, required_member, /*tolerate_damage=*/true);
  Sample s;
  while (r.next(s)) emit(std::move(s));
  const auto& st = r.stats();
  skips.add(required_member.empty() ? "no_image" : "no_features", st.first_skipped_sample, st.skipped_samples);
  skips.add("bad_member", st.first_skipped_member, st.skipped_members);
  skips.add("damaged_shard", st.first_damaged_shard, st.damaged_shards);
}

namespace {

std::string index_path_of(const DataSource& src) {
  if (ext_of(src.spec) == ".jsonl") return src.spec;
  if (fs::is_directory(src.spec)) return (fs::path(src.spec) / "index.jsonl").string();
  if (!src.units.empty() && !src.units[0].shard.empty())
    return (fs::path(src.units[0].shard).parent_path() / "index.jsonl").string();
  return "";
}

std::string normal(const fs::path& p) {
  std::error_code ec;
  auto c = fs::weakly_canonical(p, ec);
  return (ec ? p.lexically_normal() : c).string();
}

}  // namespace

std::optional<IndexedCount> indexed_samples(const DataSource& src) {
  const std::string path = index_path_of(src);
  std::ifstream in(path);
  if (path.empty() || !in) return std::nullopt;
  std::map<std::string, bool> read;  // shard as written in the index -> is it one of the units
  for (const auto& u : src.units)
    if (!u.shard.empty()) read[normal(u.shard)] = true;
  const fs::path dir = fs::path(path).parent_path();
  IndexedCount out{path, 0};
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > 1'000'000) continue;  // not an index line; the check is advisory, it never fails the run
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) continue;
    if (j.contains("shard") && j["shard"].is_string()) {
      const std::string name = j["shard"].get<std::string>();
      if (read.count(normal(dir / name))) ++out.samples;
    } else if (j.contains("image")) {
      ++out.samples;
    }
  }
  return out;
}

std::string check_against_index(const DataSource& src, int64_t loaded, const SkipCounts& skips) {
  const auto indexed = indexed_samples(src);
  if (!indexed) return "";
  int64_t skipped = 0;  // the per-sample causes; bad_member and damaged_shard count members and shards
  for (const char* cause : {"no_image", "missing_file", "undecodable", "no_caption", "bad_caption"})
    skipped += skips.count.count(cause) ? skips.count.at(cause) : 0;
  const int64_t seen = loaded + skipped;
  if (seen == indexed->samples) return "";
  return fmt::format(
      "{}: the index lists {} samples in these shards, but {} were loaded and {} skipped with a cause: {} {} ({}). "
      "{}; check the shards with `iomm data scan --data {}`",
      src.spec, indexed->samples, loaded, skipped, std::abs(indexed->samples - seen),
      seen < indexed->samples ? "missing" : "more than indexed", indexed->index,
      seen < indexed->samples ? "Lost without a cause of their own: a tar cut at a member boundary, members "
                                "swallowed by a damaged size field, or a shard replaced by a shorter copy"
                              : "The index is older than the shards, or lists other shards",
      src.spec);
}

}  // namespace iomm::data
