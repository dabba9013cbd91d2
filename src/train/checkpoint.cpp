#include "train/checkpoint.h"

#include <sys/statvfs.h>

#include <fcntl.h>
#include <stdio.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <regex>

#include <torch/torch.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/tensor_io.h"

namespace iomm {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kFormat = "iomm-train-checkpoint";
constexpr int kVersion = 1;
constexpr const char* kComplete = "COMPLETE";
constexpr const char* kState = "state.json";

fs::path checkpoints_dir(const std::string& run_dir) { return fs::path(run_dir) / "checkpoints"; }

// The step of a finished checkpoint dir name ("step-00000123"), or nullopt for anything else (temp dirs included).
std::optional<int64_t> parse_step_dir(const std::string& name) {
  static const std::regex re(R"(step-(\d{1,18}))");
  std::smatch m;
  if (!std::regex_match(name, m, re)) return std::nullopt;
  return std::stoll(m[1]);
}

// Leftovers of an interrupted save ("step-N.tmp") or prune ("step-N.deleting"): safe to delete, never to load.
bool is_leftover(const std::string& name) {
  static const std::regex re(R"(step-\d+\.(tmp|deleting))");
  return std::regex_match(name, re);
}

struct Found {
  int64_t step;
  fs::path path;
};

// Complete checkpoints, oldest first. `warn` reports the dirs that look like checkpoints but cannot be used.
std::vector<Found> complete_checkpoints(const fs::path& dir, bool warn) {
  std::vector<Found> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_directory()) continue;
    std::string name = e.path().filename().string();
    if (auto step = parse_step_dir(name)) {
      if (fs::exists(e.path() / kComplete))
        out.push_back({*step, e.path()});
      else if (warn)
        spdlog::warn("ignoring checkpoint '{}': it has no {} file (an unfinished copy?); delete it or finish copying",
                     e.path().string(), kComplete);
    } else if (warn && is_leftover(name)) {
      spdlog::warn("ignoring '{}': left by an interrupted checkpoint save or prune; the next save deletes it",
                   e.path().string());
    }
  }
  std::sort(out.begin(), out.end(), [](const Found& a, const Found& b) { return a.step < b.step; });
  return out;
}

void check_stem(const std::string& stem) {
  static const std::regex re(R"([A-Za-z0-9_\-]+)");
  if (!std::regex_match(stem, re))
    fail("checkpoint file stem '{}' is not allowed: use letters, digits, '_' or '-'", stem);
}

void rename_or_fail(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    fail("renaming '{}' to '{}' failed: {} (is the run directory on a writable local filesystem?)", from.string(),
         to.string(), std::strerror(errno));
}

// Puts the finished `tmp` dir at `final`. When `final` exists (the same step saved again) the two are swapped
// atomically, so there is no moment without a complete step-N; the old copy, now at `tmp`, is deleted after.
void move_into_place(const fs::path& tmp, const fs::path& final) {
  if (!fs::exists(final)) return rename_or_fail(tmp, final);
  spdlog::warn("checkpoint '{}' exists and is replaced by the new save of the same step", final.string());
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final.c_str(), RENAME_EXCHANGE) != 0) {
    // Filesystems without RENAME_EXCHANGE: a short window where only older checkpoints are complete.
    fs::path aside = fs::path(final.string() + ".deleting");
    fs::remove_all(aside);
    rename_or_fail(final, aside);
    rename_or_fail(tmp, final);
    fs::remove_all(aside);
    return;
  }
  fsync_dir(final.parent_path().string());
  fs::remove_all(tmp);
}

std::map<std::string, std::string> file_metadata(int64_t step, const std::string& stem) {
  return {{"format", kFormat}, {"step", std::to_string(step)}, {"stem", stem}};
}

void write_checkpoint_files(const fs::path& tmp, const TrainCheckpoint& ck) {
  json sizes = json::object();
  for (const auto& [stem, tensors] : ck.files) {
    std::string name = stem + ".safetensors";
    save_tensors((tmp / name).string(), tensors, file_metadata(ck.step, stem));
    sizes[name] = fs::file_size(tmp / name);
  }
  std::string state = json{{"format", kFormat}, {"version", kVersion}, {"step", ck.step}, {"state", ck.state}}.dump(2);
  write_file_atomic((tmp / kState).string(), state + "\n");
  sizes[kState] = state.size() + 1;
  // COMPLETE goes last: its presence says every file above is whole, and its sizes let a load detect truncation.
  json complete{{"format", kFormat}, {"version", kVersion}, {"step", ck.step}, {"files", sizes}};
  write_file_atomic((tmp / kComplete).string(), complete.dump(2) + "\n");
  fsync_dir(tmp.string());
}

// Deletes by renaming first, so a prune that is killed midway leaves a `.deleting` leftover, never a
// half-deleted dir that still looks complete.
void delete_checkpoint(const fs::path& dir) {
  fs::path doomed(dir.string() + ".deleting");
  fs::remove_all(doomed);
  rename_or_fail(dir, doomed);
  fs::remove_all(doomed);
  spdlog::info("deleted old checkpoint {}", dir.filename().string());
}

void remove_leftovers(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && is_leftover(e.path().filename().string())) {
      spdlog::info("deleting '{}', left by an interrupted checkpoint save or prune", e.path().string());
      fs::remove_all(e.path());
    }
}

// Complete checkpoints above `new_step` mean the run was resumed from an earlier one: set aside, never deleted.
void set_aside_newer(const fs::path& dir, int64_t new_step) {
  for (const auto& c : complete_checkpoints(dir, /*warn=*/false)) {
    if (c.step <= new_step) continue;
    auto stamp = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch()).count();
    fs::path aside(fmt::format("{}.superseded-{}", c.path.string(), stamp));
    rename_or_fail(c.path, aside);
    spdlog::warn("checkpoint '{}' is newer than the step just saved ({}), so this run continued from an earlier "
                 "checkpoint; it was moved to '{}' (delete it when it is no longer needed)",
                 c.path.string(), new_step, aside.string());
  }
}

// Deletes the checkpoints below `new_step` that keep_last does not keep beside the new one.
void delete_older(const fs::path& dir, int64_t new_step, int keep_last) {
  if (keep_last <= 0) return;
  std::vector<Found> older;
  for (const auto& c : complete_checkpoints(dir, /*warn=*/false))
    if (c.step < new_step) older.push_back(c);
  size_t keep_older = static_cast<size_t>(keep_last - 1);
  for (size_t i = 0; i + keep_older < older.size(); ++i) delete_checkpoint(older[i].path);
}

json read_json(const fs::path& path, const std::string& fix) {
  if (!fs::exists(path)) fail("'{}' is missing: {}", path.string(), fix);
  try {
    return json::parse(read_file(path.string()));
  } catch (const json::exception& e) {
    fail("'{}' is not valid JSON ({}): {}", path.string(), e.what(), fix);
  }
}

int64_t read_step(const json& j, const fs::path& path, const std::string& fix) {
  if (j.value("format", "") != kFormat || !j.contains("step") || !j["step"].is_number_integer())
    fail("'{}' is not an iomm training checkpoint file (needs \"format\": \"{}\" and an integer \"step\"): {}",
         path.string(), kFormat, fix);
  if (j.value("version", 0) > kVersion)
    fail("'{}' has checkpoint format version {}, newer than this iomm reads ({}): update iomm", path.string(),
         j.value("version", 0), kVersion);
  return j["step"].get<int64_t>();
}

}  // namespace

std::string checkpoint_dir_name(int64_t step) {
  if (step < 0) fail("checkpoint step {} is negative", step);
  return fmt::format("step-{:08d}", step);
}

std::string save_checkpoint(const std::string& run_dir, const TrainCheckpoint& ck, int keep_last) {
  for (const auto& [stem, tensors] : ck.files) check_stem(stem);
  fs::path dir = checkpoints_dir(run_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("cannot create checkpoint directory '{}': {}", dir.string(), ec.message());
  remove_leftovers(dir);

  // With keep_last >= 2 the checkpoints this save replaces go first, so a save needs room for keep_last checkpoints,
  // not keep_last + 1. The newest complete one is never among them: a save that fails still leaves it. With
  // keep_last = 1 the old one stays until the new one is complete (room for two).
  if (keep_last >= 2) delete_older(dir, ck.step, keep_last);
  std::string name = checkpoint_dir_name(ck.step);
  fs::path final = dir / name, tmp = dir / (name + ".tmp");
  fs::create_directory(tmp, ec);
  if (ec) fail("cannot create '{}': {}", tmp.string(), ec.message());
  try {
    write_checkpoint_files(tmp, ck);
  } catch (...) {
    // A failure (disk full, a bad tensor) leaves the previous checkpoints as they were.
    fs::remove_all(tmp, ec);
    throw;
  }
  move_into_place(tmp, final);
  fsync_dir(dir.string());
  write_file_atomic((dir / "latest").string(), name + "\n");
  set_aside_newer(dir, ck.step);
  delete_older(dir, ck.step, keep_last);
  spdlog::info("saved checkpoint {}", final.string());
  return final.string();
}

std::optional<std::string> latest_checkpoint(const std::string& run_dir) {
  fs::path dir = checkpoints_dir(run_dir);
  auto all = complete_checkpoints(dir, /*warn=*/true);
  if (all.empty()) return std::nullopt;
  const fs::path& newest = all.back().path;
  // `latest` lags the newest dir only when a save was killed between the rename and the pointer update.
  std::error_code ec;
  if (fs::exists(dir / "latest", ec)) {
    std::string named = read_file((dir / "latest").string());
    while (!named.empty() && std::isspace(static_cast<unsigned char>(named.back()))) named.pop_back();
    if (named != newest.filename().string())
      spdlog::warn("'{}' names '{}' but '{}' is the newest complete checkpoint; resuming from the newest",
                   (dir / "latest").string(), named, newest.string());
  }
  return newest.string();
}

TrainCheckpoint load_checkpoint(const std::string& checkpoint_dir) {
  fs::path dir(checkpoint_dir);
  const std::string fix = fmt::format(
      "this checkpoint is damaged; resume from an older one in '{}' (delete or move this directory)",
      dir.parent_path().string());
  if (!fs::is_directory(dir)) fail("checkpoint directory '{}' does not exist: check the path", checkpoint_dir);
  fs::path complete_path = dir / kComplete;
  if (!fs::exists(complete_path))
    fail("'{}' is missing, so the checkpoint was never finished (an interrupted save or copy): resume from an older "
         "checkpoint in '{}', or copy the directory again",
         complete_path.string(), dir.parent_path().string());
  json complete = read_json(complete_path, fix);
  int64_t step = read_step(complete, complete_path, fix);
  if (!complete.contains("files") || !complete["files"].is_object())
    fail("'{}' has no \"files\" object: {}", complete_path.string(), fix);

  TrainCheckpoint ck;
  ck.step = step;
  for (const auto& [name, size] : complete["files"].items()) {
    fs::path path = dir / name;
    std::error_code ec;
    uint64_t actual = fs::file_size(path, ec);
    if (ec) fail("'{}' is missing (listed in {}): {}", path.string(), kComplete, fix);
    if (!size.is_number_unsigned() || actual != size.get<uint64_t>())
      fail("'{}' has {} bytes but {} records {}: the file is truncated or was replaced; {}", path.string(), actual,
           kComplete, size.dump(), fix);
    if (name == kState) continue;
    const std::string suffix = ".safetensors";
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      fail("'{}' lists '{}', which is neither state.json nor a .safetensors file: {}", complete_path.string(), name,
           fix);
    std::string stem = name.substr(0, name.size() - suffix.size());
    std::map<std::string, std::string> meta;
    try {
      safetensors::Checkpoint st(path.string());
      meta = st.metadata();
      ck.files[stem] = load_tensors(st);
    } catch (const Error& e) {
      std::string what = e.what();
      if (what.find(path.string()) == std::string::npos) what = fmt::format("reading '{}': {}", path.string(), what);
      fail("{}; {}", what, fix);
    }
    if (meta["step"] != std::to_string(step))
      fail("'{}' was written at step '{}' but {} says step {}: the directory mixes files of different saves; {}",
           path.string(), meta["step"], kComplete, step, fix);
  }

  fs::path state_path = dir / kState;
  json state = read_json(state_path, fix);
  if (read_step(state, state_path, fix) != step)
    fail("'{}' is for step {} but {} says step {}: {}", state_path.string(), state["step"].dump(), kComplete, step,
         fix);
  ck.state = state.value("state", json::object());
  return ck;
}

at::Tensor generator_state(const at::Generator& g) {
  at::Generator handle = g;  // shares the generator; mutex() is non-const
  std::lock_guard<std::mutex> lock(handle.mutex());
  return handle.get_state();
}

void set_generator_state(at::Generator& g, const at::Tensor& state, const std::string& source) {
  std::lock_guard<std::mutex> lock(g.mutex());
  try {
    g.set_state(state.to(at::kCPU).contiguous());
  } catch (const c10::Error& e) {
    fail("{}: cannot restore the {} generator from a {} tensor of {} bytes ({}); the checkpoint was written for "
         "another device or torch version: resume on the same kind of device",
         source, c10::DeviceTypeName(g.device().type()), c10::toString(state.scalar_type()), state.nbytes(),
         e.what_without_backtrace());
  }
}

namespace {

std::string mib(uint64_t bytes) { return fmt::format("{:.1f} MiB", double(bytes) / (1 << 20)); }

uint64_t bytes_under(const fs::path& dir) {
  uint64_t n = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator(); ++it)
    if (it->is_regular_file(ec)) n += it->file_size(ec);
  return n;
}

}  // namespace

uint64_t check_checkpoint_space(const std::string& run_dir, uint64_t checkpoint_bytes, int keep_last,
                                int64_t saves_left) {
  const fs::path dir = checkpoints_dir(run_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  struct statvfs fsinfo {};
  if (statvfs(dir.c_str(), &fsinfo) != 0) {
    spdlog::warn("cannot read the free space of '{}' ({}); checkpoint space is not checked", dir.string(),
                 std::strerror(errno));
    return 0;
  }
  const uint64_t free_bytes = uint64_t(fsinfo.f_bavail) * fsinfo.f_frsize;
  const auto existing = complete_checkpoints(dir, /*warn=*/false);
  const int64_t copies_possible = int64_t(existing.size()) + std::max<int64_t>(1, saves_left);
  const int64_t peak = keep_last <= 0 ? copies_possible : std::min<int64_t>(keep_last >= 2 ? keep_last : 2, copies_possible);
  const uint64_t on_disk = bytes_under(dir);
  const uint64_t need = uint64_t(peak) * checkpoint_bytes;
  const uint64_t need_more = need > on_disk ? need - on_disk : 0;
  spdlog::info("checkpoints: about {} each; keep_last = {} keeps up to {} on disk at a save ({}; {} of it new), "
               "{} free on the filesystem of {}",
               mib(checkpoint_bytes), keep_last, peak, mib(need), mib(need_more), mib(free_bytes), dir.string());
  if (free_bytes < checkpoint_bytes)
    fail("{}: {} free, but one checkpoint needs about {}; free disk space, or write the run (--out) to a "
         "filesystem with room",
         dir.string(), mib(free_bytes), mib(checkpoint_bytes));
  if (free_bytes < need_more)
    spdlog::warn("{}: {} free, but keep_last = {} needs about {} more for checkpoints: a later save will fail; free "
                 "disk space or lower train.keep_last (2 keeps a fallback; 1 needs room for two at a save)",
                 dir.string(), mib(free_bytes), keep_last, mib(need_more));
  return need;
}

}  // namespace iomm
