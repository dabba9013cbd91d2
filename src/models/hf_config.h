// Reading Hugging Face model directories: config.json fields with typed defaults, and the compute dtype names that
// every loader and the CLI take. One copy for all model families.
#pragma once
#include <string>

#include <c10/core/ScalarType.h>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace iomm {

// `j[key]` as T, or `def` when absent or null; a wrong type fails naming `source` and the field.
template <typename T>
T json_get(const nlohmann::json& j, const char* key, T def, const std::string& source) {
  if (!j.contains(key) || j[key].is_null()) return def;
  try {
    return j[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("{}: field '{}' has the wrong type ({})", source, key, j[key].dump());
  }
}

nlohmann::json read_json_file(const std::string& path);
// DIR/config.json; a missing file says what --model must point at.
nlohmann::json read_model_config(const std::string& dir);
// "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16", "float64"/"fp64".
c10::ScalarType dtype_from_name(const std::string& name);

}  // namespace iomm
