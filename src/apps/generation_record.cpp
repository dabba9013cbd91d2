#include "apps/generation_record.h"

#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/error.h"
#include "core/fs.h"
#include "data/image_tensor.h"

namespace iomm {

using json = nlohmann::json;

json to_json(const GenerationRecord& r) {
  return {{"task", r.task},         {"prompt", r.prompt},       {"negative_prompt", nullptr},
          {"seed", r.seed},         {"steps", r.steps},         {"cfg_scale", r.cfg_scale},
          {"sampler", r.sampler},   {"shift", r.shift},         {"model_fingerprint", r.model_fingerprint}};
}

namespace {
template <typename T>
T field(const json& j, const char* key, const std::string& where, const char* type) {
  if (!j.contains(key)) fail("{}: the iomm parameters have no '{}'; the PNG was not written by iomm", where, key);
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    fail("{}: '{}' in the iomm parameters is {}, not {}", where, key, j.at(key).dump(), type);
  }
}
}  // namespace

GenerationRecord record_from_json(const json& j, const std::string& where) {
  if (!j.is_object()) fail("{}: the iomm parameters are not a JSON object", where);
  GenerationRecord r;
  r.task = field<std::string>(j, "task", where, "a string");
  if (r.task != "generate" && r.task != "edit")
    fail("{}: task '{}' in the iomm parameters is neither generate nor edit", where, r.task);
  r.prompt = field<std::string>(j, "prompt", where, "a string");
  r.seed = field<uint64_t>(j, "seed", where, "an unsigned integer");
  r.steps = field<int64_t>(j, "steps", where, "an integer");
  r.cfg_scale = field<double>(j, "cfg_scale", where, "a number");
  r.sampler = field<std::string>(j, "sampler", where, "a string");
  r.shift = field<double>(j, "shift", where, "a number");
  if (j.contains("model_fingerprint") && j["model_fingerprint"].is_string())
    r.model_fingerprint = j["model_fingerprint"].get<std::string>();
  return r;
}

GenerationRecord read_png_record(const std::string& png_path) {
  for (const auto& t : read_png_text_file(png_path)) {
    if (t.key != kPngRecordKey) continue;
    json j = json::parse(t.text, nullptr, false);
    if (j.is_discarded()) fail("{}: the '{}' text chunk is not valid JSON", png_path, kPngRecordKey);
    return record_from_json(j, png_path);
  }
  fail("{}: no '{}' text chunk: the PNG was not written by iomm generate / edit / serve (or its metadata was "
       "stripped); give the parameters as options instead",
       png_path, kPngRecordKey);
}

GenerateOptions generate_options(const GenerationRecord& r) {
  GenerateOptions o;
  o.steps = r.steps;
  o.cfg_scale = r.cfg_scale;
  o.seed = r.seed;
  o.sampler = r.sampler;
  o.shift = r.shift;
  return o;
}

at::Tensor reference_tensor(const Image& img, int64_t resolution) {
  auto square = resize_shorter_side_center_crop(to_rgb(img), int(resolution), Resample::Bicubic);
  return normalize_signed(image_to_tensor(square));
}

at::Tensor generate_image(IommModel& model, const GenerationRecord& r, const at::Tensor& reference,
                          const GenerateCallback& on_step) {
  if (r.task == "edit" && !reference.defined()) fail("edit: no reference image given");
  ConditionInput cond = r.task == "edit" ? ConditionInput{ConditionKind::edit, r.prompt, reference}
                                         : ConditionInput{ConditionKind::text, r.prompt, {}};
  return model.generate({cond}, generate_options(r), on_step)[0];
}

std::vector<uint8_t> encode_generated_png(const at::Tensor& image, const GenerationRecord& r) {
  auto img = tensor_to_image(denormalize_signed(image).clamp(0, 1));
  return encode_png(img, {{kPngRecordKey, to_json(r).dump()}});
}

void write_generated_png(const at::Tensor& image, const GenerationRecord& r, const std::string& path) {
  auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  auto bytes = encode_generated_png(image, r);
  write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace iomm
