#include "core/tensor_io.h"

#include <torch/torch.h>

#include "core/error.h"
#include "core/hash.h"

namespace iomm {

using safetensors::DType;

namespace {

constexpr std::pair<DType, at::ScalarType> kScalarTypes[] = {
    {DType::BOOL, at::kBool}, {DType::U8, at::kByte},       {DType::I8, at::kChar},    {DType::I16, at::kShort},
    {DType::F16, at::kHalf},  {DType::BF16, at::kBFloat16}, {DType::I32, at::kInt},    {DType::F32, at::kFloat},
    {DType::F64, at::kDouble}, {DType::I64, at::kLong},
};

std::optional<DType> find_dtype(at::ScalarType t) {
  for (const auto& [dt, st] : kScalarTypes)
    if (st == t) return dt;
  return std::nullopt;
}

constexpr const char* kStorableTypes = "F64, F32, F16, BF16, I64, I32, I16, I8, U8 or BOOL";

// Contiguous CPU copies (or the tensors themselves when already so), kept alive while their bytes are written.
// Checks every tensor before copying any, so a bad one fails fast and before device-to-host traffic.
std::vector<at::Tensor> host_copies(const std::string& path, const std::map<std::string, at::Tensor>& tensors) {
  for (const auto& [name, t] : tensors) {
    if (!t.defined()) fail("cannot save tensor '{}' to '{}': it is undefined", name, path);
    if (!find_dtype(t.scalar_type()))
      fail("cannot save tensor '{}' to '{}': its torch dtype {} has no safetensors name iomm writes ({}); convert "
           "it first",
           name, path, c10::toString(t.scalar_type()), kStorableTypes);
  }
  std::vector<at::Tensor> out;
  out.reserve(tensors.size());
  for (const auto& [name, t] : tensors) out.push_back(t.to(at::kCPU).contiguous());
  return out;
}

std::vector<safetensors::TensorView> views_of(const std::map<std::string, at::Tensor>& tensors,
                                              const std::vector<at::Tensor>& host) {
  std::vector<safetensors::TensorView> views;
  views.reserve(tensors.size());
  size_t i = 0;
  for (const auto& [name, t] : tensors) {
    const at::Tensor& h = host[i++];
    views.push_back({name, to_safetensors_dtype(h.scalar_type()), h.sizes().vec(), h.data_ptr(), h.nbytes()});
  }
  return views;
}

}  // namespace

at::ScalarType to_scalar_type(DType d) {
  for (const auto& [dt, st] : kScalarTypes)
    if (dt == d) return st;
  fail("internal error: no torch type for safetensors dtype {}", safetensors::dtype_name(d));
}

DType to_safetensors_dtype(at::ScalarType t) {
  if (auto d = find_dtype(t)) return *d;
  fail("torch dtype {} cannot be stored: iomm writes safetensors as {}; convert the tensor first", c10::toString(t),
       kStorableTypes);
}

at::Tensor load_tensor(const safetensors::Checkpoint& ckpt, const std::string& name) {
  const auto& info = ckpt.info(name);
  at::Tensor t = at::empty(info.shape, at::TensorOptions().dtype(to_scalar_type(info.dtype)));
  ckpt.read_into(name, t.data_ptr(), info.nbytes());
  return t;
}

std::map<std::string, at::Tensor> load_tensors(const safetensors::Checkpoint& ckpt) {
  std::map<std::string, at::Tensor> out;
  for (const auto& name : ckpt.names()) out.emplace(name, load_tensor(ckpt, name));
  return out;
}

std::map<std::string, at::Tensor> load_tensors(const std::string& path, safetensors::ReadMode mode) {
  return load_tensors(safetensors::Checkpoint(path, mode));
}

void save_tensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                  const std::map<std::string, std::string>& metadata) {
  auto host = host_copies(path, tensors);
  safetensors::write(path, views_of(tensors, host), metadata);
}

std::vector<std::string> save_tensors_sharded(const std::string& dir, const std::map<std::string, at::Tensor>& tensors,
                                              const std::map<std::string, std::string>& metadata,
                                              uint64_t max_shard_bytes, const std::string& stem) {
  auto host = host_copies(dir, tensors);
  return safetensors::write_sharded(dir, views_of(tensors, host), metadata, max_shard_bytes, stem);
}

std::string tensors_to_bytes(const std::map<std::string, at::Tensor>& tensors,
                             const std::map<std::string, std::string>& metadata) {
  auto host = host_copies("<memory>", tensors);
  return safetensors::serialize(views_of(tensors, host), metadata);
}

std::map<std::string, at::Tensor> tensors_from_bytes(std::string bytes, const std::string& what) {
  auto file = safetensors::File::from_bytes(what, std::move(bytes));
  std::map<std::string, at::Tensor> out;
  for (const auto& info : file->tensors()) {
    at::Tensor t = at::empty(info.shape, at::TensorOptions().dtype(to_scalar_type(info.dtype)));
    file->read_into(info.name, t.data_ptr(), info.nbytes());
    out.emplace(info.name, t);
  }
  return out;
}

std::string fingerprint_tensors(const std::map<std::string, at::Tensor>& tensors) {
  Hasher h;
  for (const auto& [name, t] : tensors) {
    auto host = t.to(at::kCPU).contiguous();
    h.field(name).field(c10::toString(host.scalar_type()));
    for (int64_t d : host.sizes()) h.update(&d, sizeof d);
    h.update(host.data_ptr(), host.nbytes());
  }
  return "fnv1a64:" + h.hex();
}

}  // namespace iomm
