#include "train/mixed_precision.h"

#include <ATen/autocast_mode.h>
#include <c10/core/Device.h>

#include "core/config.h"
#include "core/error.h"

namespace iomm {

std::string autocast_from_config(Config& cfg, const std::string& model_dtype) {
  auto a = cfg.get_choice("train.autocast", "none", {"none", "bfloat16"});
  if (a != "none" && model_dtype != "float32")
    fail("{}: train.autocast = {} keeps fp32 master weights, but model.dtype = {}; set model.dtype = \"float32\" "
         "(autocast runs the forward in {}), or train.autocast = \"none\" to train in {} throughout",
         cfg.source(), a, model_dtype, a, model_dtype);
  return a;
}

AutocastScope::AutocastScope(const std::string& device, const std::string& dtype) {
  if (dtype == "none") return;
  active_ = true;
  device_ = c10::Device(device).type();
  prev_enabled_ = at::autocast::is_autocast_enabled(device_);
  prev_dtype_ = at::autocast::get_autocast_dtype(device_);
  at::autocast::set_autocast_dtype(device_, c10::ScalarType::BFloat16);
  at::autocast::set_autocast_enabled(device_, true);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  // The weight casts are cached for the scope; the weights change at the next optimizer step.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(device_, prev_enabled_);
  at::autocast::set_autocast_dtype(device_, prev_dtype_);
}

}  // namespace iomm
