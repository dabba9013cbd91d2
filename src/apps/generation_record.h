// What made an image, and the one code path that makes it. Every PNG iomm writes from a model (`iomm generate`,
// `iomm edit`, `iomm serve`, GenEval-layout generation) carries a GenerationRecord as JSON in an iTXt chunk keyed
// kPngRecordKey, and `iomm generate --from-png` / `iomm edit --from-png` read it back. The CLI and the server both
// call generate_image() and encode_generated_png(), so the same parameters give the same PNG bytes everywhere.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

#include "data/image.h"
#include "model/iomm_model.h"

namespace iomm {

inline constexpr const char* kPngRecordKey = "iomm-parameters";

struct GenerationRecord {
  std::string task = "generate";  // generate | edit (edit: the instruction is `prompt`, plus a reference image)
  std::string prompt;
  uint64_t seed = 0;
  int64_t steps = 20;
  double cfg_scale = 4.5;
  std::string sampler = "euler";
  double shift = 1.0;
  std::string model_fingerprint;  // model/model_fingerprint.h; empty when unknown (a model never saved)
};

// JSON with every field, keys sorted, plus "negative_prompt": null. iomm has no negative prompt: true CFG guides
// against the model's fixed unconditional prompt (SPEC §1); the key is there, null, so readers that expect the
// field learn that none was used.
nlohmann::json to_json(const GenerationRecord& r);
// Fails naming `where` and the field when a field is missing or of the wrong type.
GenerationRecord record_from_json(const nlohmann::json& j, const std::string& where);
GenerationRecord read_png_record(const std::string& png_path);  // fails when the PNG has no record

GenerateOptions generate_options(const GenerationRecord& r);

// The reference image of an edit, as the model takes it: RGB, shorter side resized to the model's resolution
// (bicubic), centre-cropped, in [-1, 1], [3, R, R].
at::Tensor reference_tensor(const Image& img, int64_t resolution);

// One image [3, R, R] in [-1, 1]: text-to-image (task "generate") or an edit of `reference` (task "edit").
at::Tensor generate_image(IommModel& model, const GenerationRecord& r, const at::Tensor& reference = {},
                          const GenerateCallback& on_step = nullptr);

// The PNG of an image [3, R, R] in [-1, 1] with its record.
std::vector<uint8_t> encode_generated_png(const at::Tensor& image, const GenerationRecord& r);
void write_generated_png(const at::Tensor& image, const GenerationRecord& r, const std::string& path);

}  // namespace iomm
