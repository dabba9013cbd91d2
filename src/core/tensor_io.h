// The libtorch side of safetensors: checkpoints in and out as at::Tensor.
#pragma once
#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "core/safetensors.h"

namespace iomm {

at::ScalarType to_scalar_type(safetensors::DType d);
// Fails for types safetensors (as iomm writes it) has no name for, e.g. complex or uint16.
safetensors::DType to_safetensors_dtype(at::ScalarType t);

// Every tensor of a file, model directory or sharded checkpoint, as CPU tensors that own their memory.
std::map<std::string, at::Tensor> load_tensors(const std::string& path,
                                               safetensors::ReadMode mode = safetensors::ReadMode::Mmap);
std::map<std::string, at::Tensor> load_tensors(const safetensors::Checkpoint& ckpt);
// One tensor (a CPU tensor that owns its memory) without reading the others.
at::Tensor load_tensor(const safetensors::Checkpoint& ckpt, const std::string& name);

// Writes `tensors` (any device, any layout; stored as contiguous CPU copies) to one file, atomically.
void save_tensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                  const std::map<std::string, std::string>& metadata = {});
// The bytes of a safetensors file holding `tensors` (for a tar member), and back (CPU tensors owning their memory);
// `what` names the bytes in errors.
std::string tensors_to_bytes(const std::map<std::string, at::Tensor>& tensors,
                             const std::map<std::string, std::string>& metadata = {});
std::map<std::string, at::Tensor> tensors_from_bytes(std::string bytes, const std::string& what);

// "fnv1a64:<hex>" over the tensors in name order: each name, dtype, shape and bytes. Equal weights (on any device,
// read from any file layout) give equal fingerprints; one changed element changes it.
std::string fingerprint_tensors(const std::map<std::string, at::Tensor>& tensors);

// The same as Hugging Face shards (see safetensors::write_sharded); tensors in name order. Returns the paths written.
std::vector<std::string> save_tensors_sharded(const std::string& dir, const std::map<std::string, at::Tensor>& tensors,
                                              const std::map<std::string, std::string>& metadata,
                                              uint64_t max_shard_bytes, const std::string& stem = "model");

}  // namespace iomm
