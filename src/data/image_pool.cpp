#include "data/image_pool.h"

#include <filesystem>

#include <torch/torch.h>

#include "core/error.h"
#include <spdlog/spdlog.h>
#include "core/progress.h"
#include "data/image.h"
#include "data/image_tensor.h"
#include "data/sample_stream.h"
#include "data/webdataset.h"

namespace iomm::data {

namespace fs = std::filesystem;

std::string PoolStats::summary() const {
  return fmt::format("{} images; skipped: {}", loaded, skipped.summary());
}

at::Tensor to_model_range(const at::Tensor& images_u8) { return images_u8.to(torch::kFloat).div_(127.5).sub_(1.0); }

at::Tensor ImagePool::batch(const std::vector<int64_t>& idx) const {
  return to_model_range(images.index_select(0, torch::tensor(idx, torch::kLong)));
}

at::Tensor training_image(const Sample& s, int resolution, bool jpeg_draft) {
  const auto* bytes = s.image();
  if (bytes == nullptr) fail("sample '{}' of '{}' has no image member", s.key, s.shard);
  auto img = decode_image_bytes(bytes->data(), bytes->size(), s.shard + ": " + s.key, jpeg_draft ? resolution : 0);
  img = resize_shorter_side_center_crop(to_rgb(img), resolution, Resample::Bicubic);
  // HWC bytes -> CHW with a plain loop: a torch op here (permute + contiguous) would run an OpenMP region from the
  // streaming loader's worker threads, a second team of spinning threads per worker (measured: 55% of a 1-worker
  // scan's CPU time in libgomp).
  auto t = torch::empty({3, img.height, img.width}, torch::kUInt8);
  uint8_t* dst = t.data_ptr<uint8_t>();
  const size_t plane = size_t(img.height) * size_t(img.width);
  for (size_t i = 0; i < plane; ++i)
    for (size_t c = 0; c < 3; ++c) dst[c * plane + i] = img.pixels[3 * i + c];
  return t;
}

namespace {
struct LimitReached {};
}  // namespace

ImagePool load_image_pool(const std::string& spec, int resolution, bool require_captions, int64_t limit,
                          bool progress) {
  auto source = DataSource::open(spec);
  ImagePool pool;
  std::vector<at::Tensor> images;
  std::unique_ptr<ProgressBar> bar;  // the total is known only with a limit; otherwise a summary line at the end
  if (progress && limit > 0) bar = std::make_unique<ProgressBar>(limit, "load " + spec, "img");
  auto add = [&](Sample&& raw) {
    StreamSample s;
    if (auto skip = prepare_sample(raw, resolution, require_captions, /*jpeg_draft=*/false, s))
      return pool.stats.skipped.add(skip->cause, skip->example);
    images.push_back(std::move(s.image));
    if (require_captions) pool.captions.push_back(std::move(s.caption));
    pool.keys.push_back(std::move(s.key));
    if (bar) bar->update(1);
    if (limit > 0 && int64_t(images.size()) >= limit) throw LimitReached{};
  };
  try {
    for (const auto& unit : source.units) read_unit(unit, pool.stats.skipped, add);
  } catch (const LimitReached&) {
  }
  if (bar) bar->finish();
  pool.stats.loaded = int64_t(images.size());
  if (images.empty())
    fail("training data '{}' gave no usable images ({}); check the path and the shard contents", spec,
         pool.stats.summary());
  pool.images = torch::stack(images);
  if (pool.stats.skipped.total()) spdlog::warn("{}: {}", spec, pool.stats.summary());
  if (limit <= 0)
    if (auto mismatch = check_against_index(source, pool.stats.loaded, pool.stats.skipped); !mismatch.empty())
      spdlog::warn("{}", mismatch);
  return pool;
}

}  // namespace iomm::data
