// A sharded checkpoint's `*.safetensors.index.json` (weight_map, metadata): the input is the index; two valid shards
// and a file outside the model directory sit beside it, so that names, shard paths and escapes are all reachable.
#include "core/safetensors.h"
#include "fuzz_util.h"

using namespace iomm;
namespace st = iomm::safetensors;

namespace {

void write_shard(const std::string& path, const std::string& name) {
  const float values[2] = {1.0f, 2.0f};
  st::write(path, {{name, st::DType::F32, {2}, values, sizeof values}});
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  const std::string dir = fuzz::scratch_path("model");
  std::filesystem::create_directories(dir);
  write_shard(dir + "/model-00001-of-00002.safetensors", "a.weight");
  write_shard(dir + "/model-00002-of-00002.safetensors", "b.weight");
  write_shard(fuzz::scratch_path("outside.safetensors"), "c.weight");  // "../outside.safetensors" must be refused
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string index = fuzz::scratch_path("model/model.safetensors.index.json");
  fuzz::write_file(index, fuzz::as_text(data, size));
  fuzz::refusal_is_fine([&] {
    st::Checkpoint ck(index);
    for (const auto& name : ck.names()) {
      const st::TensorView v = ck.view(name);
      if (v.nbytes != ck.info(name).nbytes()) __builtin_trap();
    }
    for (const auto& [k, v] : ck.metadata()) (void)k.size();
  });
  return 0;
}
