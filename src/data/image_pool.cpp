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

at::Tensor ImagePool::batch(const std::vector<int64_t>& idx) const {
  auto i = torch::tensor(idx, torch::kLong);
  return images.index_select(0, i).to(torch::kFloat).div_(127.5).sub_(1.0);
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
    if (auto skip = prepare_sample(raw, resolution, require_captions, s))
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
  return pool;
}

}  // namespace iomm::data
