// Mixed precision (issue 15): the forward pass runs under autocast (bf16 on CUDA and, for the tests, on the CPU),
// while the master weights, their gradients and the AdamW state stay in the model's dtype, which must then be
// float32. The loss is reduced in fp32 (model/objective.cpp), so no loss scaling is needed for bf16; fp16 (which
// would need it) is not offered.
#pragma once
#include <string>

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace iomm {

class Config;

// train.autocast: "none" (default) or "bfloat16". Fails when it is on and model.dtype is not float32 (the master
// weights), naming both keys.
std::string autocast_from_config(Config& cfg, const std::string& model_dtype);

// Autocast to `dtype` ("none": nothing) on `device`'s type ("cpu", "cuda[:N]") for the scope's lifetime; restores
// the previous state and drops the cast-weight cache on exit.
class AutocastScope {
 public:
  AutocastScope(const std::string& device, const std::string& dtype);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  c10::DeviceType device_ = c10::DeviceType::CPU;
  bool prev_enabled_ = false;
  c10::ScalarType prev_dtype_ = c10::ScalarType::BFloat16;
};

}  // namespace iomm
