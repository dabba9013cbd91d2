#include "model/model_dir.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"

namespace iomm {

namespace fs = std::filesystem;

namespace {

const char* kPathKeys[] = {"model.mllm", "model.autoencoder"};

bool is_path_value(const std::string& key, const std::string& v) {
  return !v.empty() && !(key == "model.autoencoder" && (v == "identity" || v == "pixel"));
}

// `value` as TOML text for Config::set: a JSON string is a valid TOML basic string (escapes included).
std::string toml_string(const std::string& value) { return nlohmann::json(value).dump(); }

}  // namespace

std::string resolve_model_dir(const std::string& path) {
  return fs::exists(path + "/iomm.toml") ? path : path + "/model";
}

Config load_model_toml(const std::string& dir) {
  auto path = dir + "/iomm.toml";
  if (!fs::exists(path))
    fail("{} has no iomm.toml: not an iomm model directory (training writes one to RUN/model; pass that, or a "
         "checkpoint's model directory)",
         dir);
  auto cfg = Config::load(path);
  for (const char* key : kPathKeys) {
    if (!cfg.has(key)) continue;
    auto v = cfg.get_string(key, "");
    if (is_path_value(key, v) && fs::path(v).is_relative())
      cfg.set(std::string(key) + "=" + toml_string((fs::path(dir) / v).lexically_normal().string()));
  }
  return cfg;
}

void write_model_toml(const std::string& dir, const std::string& resolved_toml) {
  auto cfg = Config::parse(resolved_toml, dir + "/iomm.toml");
  auto base = fs::absolute(dir).lexically_normal();
  for (const char* key : kPathKeys) {
    if (!cfg.has(key)) continue;
    auto v = cfg.get_string(key, "");
    if (!is_path_value(key, v)) continue;
    auto rel = fs::absolute(v).lexically_normal().lexically_relative(base);
    cfg.set(std::string(key) + "=" + toml_string(rel.empty() ? v : rel.string()));
  }
  write_file_atomic(dir + "/iomm.toml", cfg.dump_input());
}

}  // namespace iomm
