// A .safetensors file: the header's JSON, dtypes, shapes and offsets, read from memory (File::from_bytes) and from
// a file (mmap and pread, which check the header against the file size on their own paths).
#include "core/safetensors.h"
#include "fuzz_util.h"

using namespace iomm;
namespace st = iomm::safetensors;

namespace {

// Reads every tensor's bytes, so that an offset past the data region would be an ASan report, not a quiet pass.
uint64_t touch(const st::File& f) {
  uint64_t sum = 0;
  for (const auto& t : f.tensors()) {
    const st::TensorView v = f.view(t.name);
    const auto* p = static_cast<const uint8_t*>(v.data);
    if (v.nbytes) sum += p[0] + p[v.nbytes - 1] + uint64_t(v.numel());
  }
  for (const auto& [k, v] : f.metadata()) sum += k.size() + v.size();
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(fuzz::as_text(data, size));
  fuzz::refusal_is_fine([&] { touch(*st::File::from_bytes("fuzz.safetensors", bytes)); });
  const std::string path = fuzz::scratch_path("fuzz.safetensors");
  fuzz::write_file(path, bytes);
  fuzz::refusal_is_fine([&] { touch(st::File(path, st::ReadMode::Mmap)); });
  fuzz::refusal_is_fine([&] {
    st::File f(path, st::ReadMode::Pread);
    for (const auto& t : f.tensors()) {
      std::string buf(t.nbytes(), '\0');
      f.read_into(t.name, buf.data(), buf.size());
    }
  });
  return 0;
}
