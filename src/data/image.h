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
// jpeg_draft_min_side > 0: a JPEG whose shorter side is at least twice that decodes in libjpeg's DCT domain at
// 1/2, 1/4 or 1/8 scale, the smallest that keeps its shorter side >= jpeg_draft_min_side (Pillow's Image.draft).
// Several times faster for large photos; the pixels then differ from a full decode + resize by a few levels,
// so the training preprocessing uses it only when asked (data.jpeg_draft). Other formats ignore it.
Image decode_image(const std::string& path, int jpeg_draft_min_side = 0);
Image decode_image_bytes(const uint8_t* data, size_t size, const std::string& name_for_errors,
                         int jpeg_draft_min_side = 0);

// ---- encoding ----
// A PNG text chunk. Written as iTXt (UTF-8, uncompressed) so prompts in any script survive; read back from tEXt,
// zTXt and iTXt alike. key: 1..79 printable Latin-1 characters, no leading/trailing/double spaces (PNG spec).
struct PngText {
  std::string key;
  std::string text;
};
bool operator==(const PngText& a, const PngText& b);

std::vector<uint8_t> encode_png(const Image& img, const std::vector<PngText>& text = {});
// Atomic (core/fs.h write_file_atomic): a crash never leaves a half-written PNG at `path`.
void write_png(const Image& img, const std::string& path, const std::vector<PngText>& text = {});

// The text chunks of a PNG in file order (fails naming the file when it is not a valid PNG).
std::vector<PngText> read_png_text(const uint8_t* data, size_t size, const std::string& name_for_errors);
std::vector<PngText> read_png_text_file(const std::string& path);

// ---- colour conversions (Pillow's Image.convert) ----
Image to_rgb(const Image& img);   // gray replicated; alpha dropped, not composited
Image to_rgba(const Image& img);  // alpha 255 where there was none
Image to_gray(const Image& img);  // ITU-R 601-2 luma, Pillow's fixed-point rounding; alpha dropped

// ---- geometry ----
// EXIF orientation values 1..8 (TIFF tag 0x0112); out-of-range values leave the image unchanged.
Image apply_exif_orientation(const Image& img, int orientation);

enum class Resample { Nearest, Bilinear, Bicubic };
Resample parse_resample(const std::string& name);  // "nearest" | "bilinear" | "bicubic"

// Pillow's Image.resize((w, h), resample): separable, antialiased (support scaled by the downscale factor),
// bicubic a = -0.5, 22-bit fixed-point weights, 8-bit intermediate between the passes (ordered as in
// Pillow 13). RGBA is
// premultiplied around the filter like Pillow (RGBA -> RGBa -> RGBA). Bit-exact with Pillow.
Image resize(const Image& img, int width, int height, Resample filter);
// The window [x0, x0 + cw) × [y0, y0 + ch) of resize(img, width, height, filter), computing only that window:
// bit-identical to cropping the full result, and cheaper when the crop is much smaller (a centre crop of a
// non-square photo).
Image resize_window(const Image& img, int width, int height, Resample filter, int x0, int y0, int cw, int ch);

// torchvision CenterCrop((h, w)): offsets round((H - h) / 2) with Python's half-to-even rounding; a crop
// larger than the image is zero-padded first, as torchvision does.
Image center_crop(const Image& img, int width, int height);

// torchvision Resize(size) (shorter side -> size, longer side int(size * long / short)) then CenterCrop(size):
// the paper's square preprocessing.
Image resize_shorter_side_center_crop(const Image& img, int size, Resample filter);

}  // namespace iomm
