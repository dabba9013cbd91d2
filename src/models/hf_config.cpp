#include "models/hf_config.h"

#include <filesystem>

#include "core/fs.h"

namespace iomm {

nlohmann::json read_json_file(const std::string& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", path, e.what());
  }
}

nlohmann::json read_model_config(const std::string& dir) {
  std::string path = dir + "/config.json";
  if (!std::filesystem::exists(path))
    fail("{}: no config.json; point --model at a Hugging Face model directory (config.json + *.safetensors)", dir);
  return read_json_file(path);
}

c10::ScalarType dtype_from_name(const std::string& d) {
  if (d == "float32" || d == "fp32") return c10::kFloat;
  if (d == "bfloat16" || d == "bf16") return c10::kBFloat16;
  if (d == "float16" || d == "fp16") return c10::kHalf;
  if (d == "float64" || d == "fp64") return c10::kDouble;  // gradient checks
  fail("dtype '{}' is not supported; use float32 or bfloat16", d);
}

}  // namespace iomm
