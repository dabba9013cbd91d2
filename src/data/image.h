// 8-bit images: decoding (JPEG, PNG, WebP, with EXIF orientation), PNG encoding, colour conversion and
// resizing. Numerics follow Pillow (Image.open + ImageOps.exif_transpose, convert, resize) so that data
// preprocessed here matches what the Python reference pipelines see. Torch-free on purpose.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace iomm {

// HWC interleaved, 8 bits per sample. channels: 1 (gray), 3 (RGB) or 4 (RGBA, straight alpha).
struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;

  Image() = default;
  // Zero-filled image; fails on bad sizes or channel counts.
  Image(int width, int height, int channels);

  bool empty() const { return pixels.empty(); }
  size_t row_bytes() const { return static_cast<size_t>(width) * channels; }
  size_t index(int x, int y, int c = 0) const { return (static_cast<size_t>(y) * width + x) * channels + c; }
  uint8_t& at(int x, int y, int c = 0) { return pixels[index(x, y, c)]; }
  uint8_t at(int x, int y, int c = 0) const { return pixels[index(x, y, c)]; }
  uint8_t* row(int y) { return pixels.data() + static_cast<size_t>(y) * row_bytes(); }
  const uint8_t* row(int y) const { return pixels.data() + static_cast<size_t>(y) * row_bytes(); }
};

bool operator==(const Image& a, const Image& b);

// ---- decoding ----
// Format by magic bytes (JPEG, PNG, WebP), never by extension. The result has Pillow's mode mapped to 1/3/4
// channels: L -> 1, RGB/CMYK -> 3, RGBA/LA -> 4; palette -> RGB, or RGBA when the PNG has transparency;
// 16-bit samples keep their high byte. EXIF orientation (2..8) is applied like ImageOps.exif_transpose.
Image decode_image(const std::string& path);
Image decode_image_bytes(const uint8_t* data, size_t size, const std::string& name_for_errors);

// ---- encoding ----
std::vector<uint8_t> encode_png(const Image& img);
// Atomic: writes `path`.tmp-<pid> and renames it over `path`.
void write_png(const Image& img, const std::string& path);

}  // namespace iomm
