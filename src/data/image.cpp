#include "data/image.h"

#include <png.h>
#include <unistd.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"

namespace iomm {

Image::Image(int w, int h, int c) : width(w), height(h), channels(c) {
  if (w <= 0 || h <= 0 || (c != 1 && c != 3 && c != 4))
    fail("image: invalid shape {}x{} with {} channels (need positive sizes and 1, 3 or 4 channels)", w, h, c);
  pixels.assign(static_cast<size_t>(w) * h * c, 0);
}

bool operator==(const Image& a, const Image& b) {
  return a.width == b.width && a.height == b.height && a.channels == b.channels && a.pixels == b.pixels;
}

// ---------------------------------------------------------------- PNG
// libpng reports errors by longjmp. All state that must survive the jump lives in a struct reached through
// a pointer that is never reassigned after setjmp, and the C++ exception is thrown only after returning.
namespace {

struct PngReader {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  std::string error;
  png_structp png = nullptr;
  png_infop info = nullptr;
  Image out;
  bool gray16 = false;             // Pillow opens these as I;16 and converts to L by clipping at 255
  std::vector<uint8_t> exif;       // eXIf chunk payload (TIFF header first), if any
  std::vector<uint8_t> wide;       // 16-bit gray samples before clipping
  std::vector<png_bytep> rows;
  bool pixels_done = false;        // a broken chunk after the pixel data (e.g. missing IEND) is tolerated

  ~PngReader() {
    if (png) png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  }
};

void png_error_fn(png_structp png, png_const_charp msg) {
  auto* r = static_cast<PngReader*>(png_get_error_ptr(png));
  r->error = msg;
  longjmp(png_jmpbuf(png), 1);
}
void png_warning_fn(png_structp, png_const_charp) {}  // libpng warnings (bad CRC in ancillary chunks...) are not fatal

void png_read_fn(png_structp png, png_bytep dst, png_size_t n) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(png));
  if (n > r->size - r->pos) png_error(png, "file is truncated");
  std::memcpy(dst, r->data + r->pos, n);
  r->pos += n;
}

// Returns false (with r->error set) on a libpng error.
bool png_decode(PngReader* r) {
  if (setjmp(png_jmpbuf(r->png))) return r->pixels_done;
  png_set_read_fn(r->png, r, png_read_fn);
  // Files in the wild often carry a bad sRGB/iCCP profile; Pillow ignores them, so does this.
  png_set_benign_errors(r->png, 1);
  png_read_info(r->png, r->info);
  png_uint_32 w = 0, h = 0;
  int depth = 0, color = 0;
  png_get_IHDR(r->png, r->info, &w, &h, &depth, &color, nullptr, nullptr, nullptr);
  if (w > (1u << 16) || h > (1u << 16)) png_error(r->png, "image larger than 65536 pixels on a side");

  r->gray16 = (color == PNG_COLOR_TYPE_GRAY && depth == 16);
  if (color == PNG_COLOR_TYPE_PALETTE) {
    png_set_palette_to_rgb(r->png);
    // Pillow keeps palette transparency (convert("RGBA") uses it); grey/RGB tRNS only annotates, so it is
    // expanded for palettes alone.
    if (png_get_valid(r->png, r->info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(r->png);
  }
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(r->png);
  if (depth == 16 && !r->gray16) png_set_strip_16(r->png);  // Pillow's ;16B raw modes keep the high byte
  if (color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(r->png);  // LA -> RGBA
  png_set_interlace_handling(r->png);
  png_read_update_info(r->png, r->info);

  int channels = png_get_channels(r->png, r->info);
  size_t rowbytes = png_get_rowbytes(r->png, r->info);
  r->out = Image(static_cast<int>(w), static_cast<int>(h), channels);
  r->rows.resize(h);
  if (r->gray16) {
    r->wide.resize(rowbytes * h);
    for (png_uint_32 y = 0; y < h; ++y) r->rows[y] = r->wide.data() + y * rowbytes;
  } else {
    if (rowbytes != r->out.row_bytes()) png_error(r->png, "unexpected row size after transforms");
    for (png_uint_32 y = 0; y < h; ++y) r->rows[y] = r->out.row(static_cast<int>(y));
  }
  png_read_image(r->png, r->rows.data());
  r->pixels_done = true;
  png_read_end(r->png, r->info);

  png_uint_32 exif_len = 0;
  png_bytep exif = nullptr;
  if (png_get_eXIf_1(r->png, r->info, &exif_len, &exif) && exif_len > 0) r->exif.assign(exif, exif + exif_len);
  return true;
}

Image decode_png(const uint8_t* data, size_t size, const std::string& name, std::vector<uint8_t>* exif) {
  PngReader r;
  r.data = data;
  r.size = size;
  r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r, png_error_fn, png_warning_fn);
  if (!r.png) fail("{}: cannot allocate a PNG decoder (out of memory?)", name);
  r.info = png_create_info_struct(r.png);
  if (!r.info) fail("{}: cannot allocate a PNG decoder (out of memory?)", name);
  if (!png_decode(&r)) fail("{}: invalid or corrupt PNG ({}); re-encode or remove the file", name, r.error);
  if (r.gray16) {
    // Big-endian 16-bit samples; Pillow's I;16 -> L conversion clips instead of scaling.
    for (size_t i = 0; i < r.out.pixels.size(); ++i) {
      unsigned v = (unsigned(r.wide[2 * i]) << 8) | r.wide[2 * i + 1];
      r.out.pixels[i] = static_cast<uint8_t>(v > 255 ? 255 : v);
    }
  }
  if (exif) *exif = std::move(r.exif);
  return std::move(r.out);
}

struct PngWriter {
  std::vector<uint8_t>* out = nullptr;
  std::string error;
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~PngWriter() {
    if (png) png_destroy_write_struct(&png, info ? &info : nullptr);
  }
};

void png_write_error_fn(png_structp png, png_const_charp msg) {
  auto* w = static_cast<PngWriter*>(png_get_error_ptr(png));
  w->error = msg;
  longjmp(png_jmpbuf(png), 1);
}
void png_write_fn(png_structp png, png_bytep src, png_size_t n) {
  auto* w = static_cast<PngWriter*>(png_get_io_ptr(png));
  w->out->insert(w->out->end(), src, src + n);
}
void png_flush_fn(png_structp) {}

bool png_encode(PngWriter* w, const Image* img) {
  if (setjmp(png_jmpbuf(w->png))) return false;
  png_set_write_fn(w->png, w, png_write_fn, png_flush_fn);
  int color = img->channels == 1 ? PNG_COLOR_TYPE_GRAY
              : img->channels == 3 ? PNG_COLOR_TYPE_RGB
                                   : PNG_COLOR_TYPE_RGB_ALPHA;
  png_set_IHDR(w->png, w->info, img->width, img->height, 8, color, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  // Level 6 is zlib's default: a good size/speed trade for data written once and read many times.
  png_set_compression_level(w->png, 6);
  png_write_info(w->png, w->info);
  for (int y = 0; y < img->height; ++y) png_write_row(w->png, const_cast<png_bytep>(img->row(y)));
  png_write_end(w->png, nullptr);
  return true;
}

}  // namespace

std::vector<uint8_t> encode_png(const Image& img) {
  if (img.width <= 0 || img.height <= 0 || (img.channels != 1 && img.channels != 3 && img.channels != 4) ||
      img.pixels.size() != static_cast<size_t>(img.width) * img.height * img.channels)
    fail("encode_png: invalid image {}x{}x{} with {} bytes", img.width, img.height, img.channels,
         img.pixels.size());
  std::vector<uint8_t> out;
  PngWriter w;
  w.out = &out;
  w.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &w, png_write_error_fn, png_warning_fn);
  if (!w.png) fail("encode_png: cannot allocate a PNG encoder (out of memory?)");
  w.info = png_create_info_struct(w.png);
  if (!w.info) fail("encode_png: cannot allocate a PNG encoder (out of memory?)");
  if (!png_encode(&w, &img)) fail("encode_png: libpng failed: {}", w.error);
  return out;
}

void write_png(const Image& img, const std::string& path) {
  std::vector<uint8_t> bytes = encode_png(img);
  std::string tmp = fmt::format("{}.tmp-{}", path, ::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail("{}: cannot open for writing (does the directory exist and is it writable?)", tmp);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    f.close();
    if (!f) {
      std::filesystem::remove(tmp);
      fail("{}: write failed (disk full?)", tmp);
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp);
    fail("{}: cannot rename {} over it: {}", path, tmp, ec.message());
  }
}

// ---------------------------------------------------------------- decoding entry points

namespace {

enum class Format { Png, Jpeg, Webp, Unknown };

Format sniff(const uint8_t* d, size_t n) {
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (n >= 8 && std::memcmp(d, png_sig, 8) == 0) return Format::Png;
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return Format::Jpeg;
  if (n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0) return Format::Webp;
  return Format::Unknown;
}

}  // namespace

Image decode_image_bytes(const uint8_t* data, size_t size, const std::string& name) {
  if (size == 0) fail("{}: file is empty; remove it or replace it with a JPEG, PNG or WebP image", name);
  switch (sniff(data, size)) {
    case Format::Png:
      return decode_png(data, size, name, nullptr);
    default:
      fail("{}: not a PNG, JPEG or WebP image (unrecognised first bytes); convert it to one of these formats",
           name);
  }
}

Image decode_image(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("{}: cannot open image (missing file or no read permission)", path);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) fail("{}: read error", path);
  return decode_image_bytes(bytes.data(), bytes.size(), path);
}

}  // namespace iomm
