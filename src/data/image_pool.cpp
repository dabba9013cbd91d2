#include "data/image_pool.h"

#include <filesystem>

#include <torch/torch.h>

#include "core/error.h"
#include <spdlog/spdlog.h>
#include "core/progress.h"
#include "data/image.h"
#include "data/image_tensor.h"
#include "data/webdataset.h"

namespace iomm::data {

namespace fs = std::filesystem;

std::string PoolStats::summary() const {
  std::string s = fmt::format("{} images", loaded);
  if (undecodable) s += fmt::format(", {} undecodable skipped (first: {})", undecodable, first_error);
  if (without_caption) s += fmt::format(", {} without caption skipped", without_caption);
  if (reader_skipped) s += fmt::format(", {} samples without an image skipped", reader_skipped);
  return s;
}

at::Tensor to_model_range(const at::Tensor& images_u8) { return images_u8.to(torch::kFloat).div_(127.5).sub_(1.0); }

at::Tensor ImagePool::batch(const std::vector<int64_t>& idx) const {
  return to_model_range(images.index_select(0, torch::tensor(idx, torch::kLong)));
}

at::Tensor training_image(const Sample& s, int resolution) {
  const auto* bytes = s.image();
  if (bytes == nullptr) fail("sample '{}' of '{}' has no image member", s.key, s.shard);
  auto img = decode_image_bytes(bytes->data(), bytes->size(), s.shard + ":" + s.key);
  img = resize_shorter_side_center_crop(to_rgb(img), resolution, Resample::Bicubic);
  return image_to_tensor(img).mul(255).round().to(torch::kUInt8);
}

namespace {

bool is_folder_of_images(const std::string& spec) {
  if (!fs::is_directory(spec)) return false;
  for (auto& e : fs::directory_iterator(spec))
    if (e.path().extension() == ".tar") return false;
  return true;
}

}  // namespace

ImagePool load_image_pool(const std::string& spec, int resolution, bool require_captions, int64_t limit,
                          bool progress) {
  if (!fs::exists(spec) && spec.find('{') == std::string::npos)
    fail("training data '{}' does not exist; give a .tar shard, a directory of shards or of images, or a brace "
         "range like dir/shard-{{000000..000009}}.tar",
         spec);
  std::unique_ptr<WebDatasetReader> wds;
  std::unique_ptr<ImageFolderReader> folder;
  if (is_folder_of_images(spec)) folder = std::make_unique<ImageFolderReader>(spec);
  else wds = std::make_unique<WebDatasetReader>(expand_shards(spec));
  ImagePool pool;
  std::vector<at::Tensor> images;
  Sample s;
  std::unique_ptr<ProgressBar> bar;  // the total is known only with a limit; otherwise a summary line at the end
  if (progress && limit > 0) bar = std::make_unique<ProgressBar>(limit, "load " + spec, "img");
  while ((wds ? wds->next(s) : folder->next(s))) {
    std::optional<std::string> caption;
    if (require_captions) {
      caption = s.caption();
      if (!caption) {
        ++pool.stats.without_caption;
        continue;
      }
    }
    try {
      images.push_back(training_image(s, resolution));
    } catch (const Error& e) {
      if (pool.stats.undecodable++ == 0) pool.stats.first_error = e.what();
      continue;
    }
    if (caption) pool.captions.push_back(*caption);
    pool.keys.push_back(s.key);
    if (bar) bar->update(1);
    if (limit > 0 && int64_t(images.size()) >= limit) break;
  }
  if (bar) bar->finish();
  if (wds) pool.stats.reader_skipped = wds->stats().skipped_samples;
  pool.stats.loaded = int64_t(images.size());
  if (images.empty())
    fail("training data '{}' gave no usable images ({}); check the path and the shard contents", spec,
         pool.stats.summary());
  pool.images = torch::stack(images);
  if (pool.stats.undecodable || pool.stats.without_caption || pool.stats.reader_skipped)
    spdlog::warn("{}: {}", spec, pool.stats.summary());
  return pool;
}

}  // namespace iomm::data
