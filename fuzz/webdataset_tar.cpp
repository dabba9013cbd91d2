// WebDataset tar shards as training reads them: members grouped into samples by key, images and captions (.txt or
// .json) looked up. The first byte picks strict or tolerant reading and an image or a required member; the rest is
// the shard.
#include "data/webdataset.h"
#include "fuzz_util.h"

using namespace iomm;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool tolerant = data[0] & 1;
  const std::string required = (data[0] & 2) ? "features.safetensors" : "";
  const std::string path = fuzz::scratch_path("shard.tar");
  fuzz::write_file(path, fuzz::as_text(data + 1, size - 1));
  fuzz::refusal_is_fine([&] {
    data::WebDatasetReader reader({path}, required, tolerant);
    data::Sample s;
    for (int i = 0; i < 1000 && reader.next(s); ++i) {
      (void)s.image_ext();
      (void)s.caption();
      (void)s.text("json");
    }
    (void)reader.stats().summary();
  });
  return 0;
}
