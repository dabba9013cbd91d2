#include "model/mllm_identity.h"

#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/model_fingerprint.h"

namespace iomm {

namespace fs = std::filesystem;

namespace {

bool counts(const fs::path& p) {  // the MLLM files of model_fingerprint (model/model_fingerprint.h)
  const auto ext = p.extension().string();
  return ext == ".safetensors" || ext == ".json" || p.filename() == "merges.txt";
}

std::string short_sha(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>().substr(0, 12) : "?"; }

}  // namespace

nlohmann::json mllm_identity(const std::string& mllm_dir) {
  if (!fs::is_directory(mllm_dir))
    fail("model.mllm = '{}' is not a directory: point it at the InternVL checkpoint directory", mllm_dir);
  std::map<std::string, std::string> files;
  for (const auto& e : fs::directory_iterator(mllm_dir))
    if (e.is_regular_file() && counts(e.path())) files[e.path().filename().string()] = sha256_file(e.path().string());
  std::string manifest;
  for (const auto& [name, sha] : files) manifest += sha + "  " + name + "\n";
  return {{"path", mllm_dir}, {"fingerprint", "sha256:" + sha256_hex(manifest)}, {"files", files}};
}

std::string mllm_changes(const nlohmann::json& recorded, const nlohmann::json& now) {
  if (recorded.value("fingerprint", "") == now.value("fingerprint", "")) return "";
  const auto& a = recorded.contains("files") ? recorded["files"] : nlohmann::json::object();
  const auto& b = now.contains("files") ? now["files"] : nlohmann::json::object();
  std::string out;
  auto add = [&](const std::string& s) { out += (out.empty() ? "" : "; ") + s; };
  for (const auto& [name, sha] : a.items()) {
    if (!b.contains(name)) add(name + " is gone");
    else if (b[name] != sha) add(fmt::format("{} differs (sha256 {}... then, {}... now)", name, short_sha(sha), short_sha(b[name])));
  }
  for (const auto& [name, sha] : b.items())
    if (!a.contains(name)) add(name + " is new");
  return out.empty() ? "the fingerprint differs" : out;
}

void check_same_mllm(const nlohmann::json& recorded, const nlohmann::json& now, const std::string& what) {
  const std::string changes = mllm_changes(recorded, now);
  if (changes.empty()) return;
  fail("{} was trained with the frozen MLLM at '{}' ({}), but model.mllm = '{}' now holds another one: {}. The "
       "adapter and generator learned that MLLM's features; point model.mllm (--set model.mllm=DIR) at the MLLM "
       "it was trained with, or start a new run",
       what, recorded.value("path", "?"), recorded.value("fingerprint", "?"), now.value("path", "?"), changes);
}

}  // namespace iomm
