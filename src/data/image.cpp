#include "data/image.h"

#include <cstdio>  // jpeglib.h needs FILE and size_t first
#include <jpeglib.h>
#include <jerror.h>  // JWRN_JPEG_EOF
#include <libexif/exif-data.h>
#include <png.h>
#include <webp/decode.h>
#include <webp/demux.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include "core/error.h"
#include "core/fs.h"

namespace iomm {

Image::Image(int w, int h, int c) : width(w), height(h), channels(c) {
  if (w <= 0 || h <= 0 || (c != 1 && c != 3 && c != 4))
    fail("image: invalid shape {}x{} with {} channels (need positive sizes and 1, 3 or 4 channels)", w, h, c);
  pixels.assign(static_cast<size_t>(w) * h * c, 0);
}

bool operator==(const Image& a, const Image& b) {
  return a.width == b.width && a.height == b.height && a.channels == b.channels && a.pixels == b.pixels;
}

namespace {
// Pillow refuses images above 2 * Image.MAX_IMAGE_PIXELS (DecompressionBombError); so do we, before allocating.
constexpr uint64_t kMaxPixels = 2ull * (1024ull * 1024 * 1024 / 4 / 3);

bool too_many_pixels(uint64_t w, uint64_t h) { return w * h > kMaxPixels; }

[[noreturn]] void fail_too_large(const std::string& name, uint64_t w, uint64_t h) {
  fail("{}: {}x{} is {} pixels, over the limit of {} (Pillow's decompression-bomb limit); downscale the file "
       "or remove it", name, w, h, w * h, kMaxPixels);
}
}  // namespace

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
  std::vector<uint8_t> wide;       // 16-bit gray samples before clipping
  std::vector<png_bytep> rows;
  bool pixels_done = false;        // a broken chunk after the pixel data (e.g. missing IEND) is tolerated
  bool too_large = false;
  png_uint_32 w = 0, h = 0;

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
  // With benign errors, libpng's check of a chunk's length against its 8 MB limit only warns, and the chunk's
  // claimed length is then allocated: decode_png cuts the input before such a chunk (png_intact_prefix).
  png_set_benign_errors(r->png, 1);
  png_read_info(r->png, r->info);
  int depth = 0, color = 0;
  png_get_IHDR(r->png, r->info, &r->w, &r->h, &depth, &color, nullptr, nullptr, nullptr);
  if (too_many_pixels(r->w, r->h)) {
    r->too_large = true;
    return false;
  }
  const png_uint_32 w = r->w, h = r->h;

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
  return true;
}

// Metadata that may carry an orientation: EXIF bytes (with or without the "Exif\0\0" prefix) and XMP text.
struct OrientationSources {
  std::vector<uint8_t> exif;
  std::string xmp;
  std::vector<PngText> text;  // every PNG text chunk (read_png_text)
};

// The bytes up to the first chunk whose length field reaches past the end of the file. libpng allocates a chunk's
// claimed length before reading it (a 148-byte file asked for 1.8 GB); cut there, the read stops at that chunk with
// "file is truncated" exactly as it did after the allocation.
size_t png_intact_prefix(const uint8_t* data, size_t size) {
  size_t pos = 8;  // the signature
  while (pos + 12 <= size) {
    const uint64_t len = uint64_t(data[pos]) << 24 | uint64_t(data[pos + 1]) << 16 | data[pos + 2] << 8 | data[pos + 3];
    if (len > size - pos - 12) return pos;
    pos += 12 + len;
  }
  return size;
}

Image decode_png(const uint8_t* data, size_t size, const std::string& name, OrientationSources* meta) {
  PngReader r;
  r.data = data;
  r.size = png_intact_prefix(data, size);
  r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r, png_error_fn, png_warning_fn);
  if (!r.png) fail("{}: cannot allocate a PNG decoder (out of memory?)", name);
  r.info = png_create_info_struct(r.png);
  if (!r.info) fail("{}: cannot allocate a PNG decoder (out of memory?)", name);
  if (!png_decode(&r)) {
    if (r.too_large) fail_too_large(name, r.w, r.h);
    fail("{}: invalid or corrupt PNG ({}); re-encode or remove the file", name, r.error);
  }
  // eXIf and XMP text, from before or after the pixel data (libpng collects both into `info`).
  png_uint_32 exif_len = 0;
  png_bytep exif = nullptr;
  if (png_get_eXIf_1(r.png, r.info, &exif_len, &exif) && exif_len > 0) meta->exif.assign(exif, exif + exif_len);
  png_textp text = nullptr;
  int num_text = 0;
  png_get_text(r.png, r.info, &text, &num_text);
  for (int i = 0; i < num_text; ++i) {
    std::string value;
    if (text[i].text) value.assign(text[i].text, text[i].itxt_length ? text[i].itxt_length : text[i].text_length);
    if (std::strcmp(text[i].key, "XML:com.adobe.xmp") == 0) meta->xmp = value;
    meta->text.push_back({text[i].key, std::move(value)});
  }
  if (r.gray16) {
    // Big-endian 16-bit samples; Pillow's I;16 -> L conversion clips instead of scaling.
    for (size_t i = 0; i < r.out.pixels.size(); ++i) {
      unsigned v = (unsigned(r.wide[2 * i]) << 8) | r.wide[2 * i + 1];
      r.out.pixels[i] = static_cast<uint8_t>(v > 255 ? 255 : v);
    }
  }
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

bool png_encode(PngWriter* w, const Image* img, std::vector<png_text>* text) {
  if (setjmp(png_jmpbuf(w->png))) return false;
  png_set_write_fn(w->png, w, png_write_fn, png_flush_fn);
  int color = img->channels == 1 ? PNG_COLOR_TYPE_GRAY
              : img->channels == 3 ? PNG_COLOR_TYPE_RGB
                                   : PNG_COLOR_TYPE_RGB_ALPHA;
  png_set_IHDR(w->png, w->info, img->width, img->height, 8, color, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  // Level 6 is zlib's default: a good size/speed trade for data written once and read many times.
  png_set_compression_level(w->png, 6);
  // Before IDAT, so tools that stop reading at the pixels still see the parameters.
  if (!text->empty()) png_set_text(w->png, w->info, text->data(), static_cast<int>(text->size()));
  png_write_info(w->png, w->info);
  for (int y = 0; y < img->height; ++y) png_write_row(w->png, const_cast<png_bytep>(img->row(y)));
  png_write_end(w->png, nullptr);
  return true;
}

// PNG keywords (spec 11.3.4.3): 1-79 Latin-1 printable characters, no leading, trailing or consecutive spaces.
void check_png_keyword(const std::string& key) {
  bool ok = !key.empty() && key.size() <= 79 && key.front() != ' ' && key.back() != ' ' &&
            key.find("  ") == std::string::npos;
  for (unsigned char c : key) ok = ok && c >= 32 && c != 127;
  if (!ok)
    fail("encode_png: text chunk keyword '{}' is not a PNG keyword (1-79 printable characters, no leading, "
         "trailing or double spaces)", key);
}

}  // namespace

bool operator==(const PngText& a, const PngText& b) { return a.key == b.key && a.text == b.text; }

std::vector<uint8_t> encode_png(const Image& img, const std::vector<PngText>& text) {
  if (img.width <= 0 || img.height <= 0 || (img.channels != 1 && img.channels != 3 && img.channels != 4) ||
      img.pixels.size() != static_cast<size_t>(img.width) * img.height * img.channels)
    fail("encode_png: invalid image {}x{}x{} with {} bytes", img.width, img.height, img.channels,
         img.pixels.size());
  std::vector<png_text> chunks;
  for (const auto& t : text) {
    check_png_keyword(t.key);
    png_text c{};
    c.compression = PNG_ITXT_COMPRESSION_NONE;
    c.key = const_cast<char*>(t.key.c_str());  // libpng copies; it never writes through these
    c.text = const_cast<char*>(t.text.c_str());
    c.itxt_length = t.text.size();
    chunks.push_back(c);
  }
  std::vector<uint8_t> out;
  PngWriter w;
  w.out = &out;
  w.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &w, png_write_error_fn, png_warning_fn);
  if (!w.png) fail("encode_png: cannot allocate a PNG encoder (out of memory?)");
  w.info = png_create_info_struct(w.png);
  if (!w.info) fail("encode_png: cannot allocate a PNG encoder (out of memory?)");
  if (!png_encode(&w, &img, &chunks)) fail("encode_png: libpng failed: {}", w.error);
  return out;
}

void write_png(const Image& img, const std::string& path, const std::vector<PngText>& text) {
  std::vector<uint8_t> bytes = encode_png(img, text);
  write_file_atomic(path, bytes.data(), bytes.size());
}

// ---------------------------------------------------------------- JPEG
// Decoded the way Pillow's JpegDecode drives libjpeg: integer slow DCT and fancy upsampling (the defaults),
// gray -> L, 3 components -> RGB, 4 components -> CMYK taken as Adobe-inverted and converted to RGB.
namespace {

struct JpegErrorMgr {
  jpeg_error_mgr pub;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {};
  bool truncated = false;
};

void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorMgr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->jump, 1);
}

// libjpeg pads a truncated stream with grey and only warns; Pillow refuses truncated files, so do we.
// Other warnings (extraneous bytes before a marker, ...) are ignored, as in Pillow.
void jpeg_emit_message(j_common_ptr cinfo, int level) {
  auto* err = reinterpret_cast<JpegErrorMgr*>(cinfo->err);
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) err->truncated = true;
}

struct JpegReader {
  int draft_min_side = 0;  // > 0: decode at 1/2, 1/4 or 1/8 scale while the shorter side stays >= this
  jpeg_decompress_struct cinfo{};
  JpegErrorMgr err;
  bool created = false;
  Image out;
  bool cmyk = false;
  bool too_large = false;
  std::vector<uint8_t> scanline;
  OrientationSources meta;
  ~JpegReader() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

bool starts_with(const uint8_t* d, size_t n, const char* prefix, size_t len) {
  return n >= len && std::memcmp(d, prefix, len) == 0;
}

bool jpeg_decode(JpegReader* r, const uint8_t* data, size_t size) {
  if (setjmp(r->err.jump)) return false;
  jpeg_create_decompress(&r->cinfo);
  r->created = true;
  jpeg_mem_src(&r->cinfo, data, static_cast<unsigned long>(size));
  jpeg_save_markers(&r->cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&r->cinfo, TRUE);
  if (too_many_pixels(r->cinfo.image_width, r->cinfo.image_height)) {
    r->too_large = true;
    return false;
  }

  // Pillow concatenates every "Exif\0\0" APP1 segment (after the first, without the prefix) and takes the
  // last XMP packet.
  static const char kExif[] = "Exif\0\0";
  static const char kXmp[] = "http://ns.adobe.com/xap/1.0/";  // followed by a NUL
  for (jpeg_saved_marker_ptr m = r->cinfo.marker_list; m; m = m->next) {
    if (m->marker != JPEG_APP0 + 1) continue;
    if (starts_with(m->data, m->data_length, kExif, 6)) {
      const uint8_t* from = m->data + (r->meta.exif.empty() ? 0 : 6);
      r->meta.exif.insert(r->meta.exif.end(), from, static_cast<const uint8_t*>(m->data) + m->data_length);
    } else if (starts_with(m->data, m->data_length, kXmp, sizeof kXmp)) {
      r->meta.xmp.assign(reinterpret_cast<const char*>(m->data) + sizeof kXmp, m->data_length - sizeof kXmp);
    }
  }

  if (r->draft_min_side > 0) {
    // libjpeg's DCT-domain scaling, chosen as Pillow's Image.draft(mode, (n, n)) does: the largest 1/denom with
    // shorter >= denom * n (the output side is then ceil(side / denom) >= n).
    const unsigned shorter = std::min(r->cinfo.image_width, r->cinfo.image_height);
    for (unsigned denom : {8u, 4u, 2u}) {
      if (shorter >= denom * unsigned(r->draft_min_side)) {
        r->cinfo.scale_num = 1;
        r->cinfo.scale_denom = denom;
        break;
      }
    }
  }
  int comps = r->cinfo.num_components;
  if (comps == 1) {
    r->cinfo.out_color_space = JCS_GRAYSCALE;
  } else if (comps == 3) {
    r->cinfo.out_color_space = JCS_RGB;
  } else if (comps == 4) {
    r->cinfo.out_color_space = JCS_CMYK;
    r->cmyk = true;
  } else {
    std::snprintf(r->err.message, sizeof r->err.message, "%d colour components (supported: 1, 3, 4)", comps);
    return false;
  }
  jpeg_start_decompress(&r->cinfo);
  int w = static_cast<int>(r->cinfo.output_width), h = static_cast<int>(r->cinfo.output_height);
  r->out = Image(w, h, r->cmyk ? 3 : comps);
  r->scanline.resize(static_cast<size_t>(w) * r->cinfo.output_components);
  while (r->cinfo.output_scanline < r->cinfo.output_height) {
    int y = static_cast<int>(r->cinfo.output_scanline);
    JSAMPROW dst = r->cmyk ? r->scanline.data() : r->out.row(y);
    jpeg_read_scanlines(&r->cinfo, &dst, 1);
    if (r->cmyk) {
      // Adobe CMYK is stored inverted (Pillow's "CMYK;I"); then Pillow's CMYK -> RGB:
      // R = (255 - K) - (255 - K) * C / 255 with MULDIV255 rounding, clipped.
      uint8_t* o = r->out.row(y);
      for (int x = 0; x < w; ++x) {
        const uint8_t* p = &r->scanline[4 * static_cast<size_t>(x)];
        int nk = p[3];  // = 255 - K after the inversion
        for (int c = 0; c < 3; ++c) {
          int cc = 255 - p[c];
          int t = cc * nk + 128;
          int v = nk - (((t >> 8) + t) >> 8);
          o[3 * x + c] = static_cast<uint8_t>(std::clamp(v, 0, 255));
        }
      }
    }
  }
  jpeg_finish_decompress(&r->cinfo);
  return true;
}

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name, OrientationSources* meta,
                  int draft_min_side) {
  JpegReader r;
  r.draft_min_side = draft_min_side;
  r.cinfo.err = jpeg_std_error(&r.err.pub);
  r.err.pub.error_exit = jpeg_error_exit;
  r.err.pub.emit_message = jpeg_emit_message;
  if (!jpeg_decode(&r, data, size)) {
    if (r.too_large) fail_too_large(name, r.cinfo.image_width, r.cinfo.image_height);
    fail("{}: invalid or corrupt JPEG ({}); re-encode or remove the file", name, r.err.message);
  }
  if (r.err.truncated)
    fail("{}: JPEG is truncated (the data ends before the image does); re-download or remove the file", name);
  *meta = std::move(r.meta);
  return std::move(r.out);
}

// ---------------------------------------------------------------- WebP
// Pillow decodes every WebP through WebPAnimDecoder (the first frame of an animation) and calls it RGBA when
// the container's ALPHA flag is set, RGB otherwise.
void read_webp_metadata(const WebPDemuxer* demux, OrientationSources* meta) {
  WebPChunkIterator it;
  if (WebPDemuxGetChunk(demux, "EXIF", 1, &it)) {
    meta->exif.assign(it.chunk.bytes, it.chunk.bytes + it.chunk.size);
    WebPDemuxReleaseChunkIterator(&it);
  }
  if (WebPDemuxGetChunk(demux, "XMP ", 1, &it)) {
    meta->xmp.assign(reinterpret_cast<const char*>(it.chunk.bytes), it.chunk.size);
    WebPDemuxReleaseChunkIterator(&it);
  }
}

// A still image without alpha (what photo data sets hold): decoded straight to RGB. The animation decoder would
// decode the same frame into a cleared RGBA canvas (a key frame is not blended), so the pixels are the same; this
// skips the canvas, its clearing and the RGBA -> RGB copy (measured: ~10% of a 512² decode). False when the file
// needs the general path, which then also reports any damage.
bool decode_webp_still_rgb(const uint8_t* data, size_t size, Image& out, OrientationSources* meta) {
  WebPBitstreamFeatures f;
  if (WebPGetFeatures(data, size, &f) != VP8_STATUS_OK || f.has_animation || f.has_alpha) return false;
  WebPData wd{data, size};
  std::unique_ptr<WebPDemuxer, void (*)(WebPDemuxer*)> demux(WebPDemux(&wd), WebPDemuxDelete);
  if (!demux) return false;
  Image img(f.width, f.height, 3);
  if (!WebPDecodeRGBInto(data, size, img.pixels.data(), img.pixels.size(), int(img.row_bytes()))) return false;
  read_webp_metadata(demux.get(), meta);
  out = std::move(img);
  return true;
}

Image decode_webp(const uint8_t* data, size_t size, const std::string& name, OrientationSources* meta) {
  int cw = 0, ch = 0;
  if (WebPGetInfo(data, size, &cw, &ch) && too_many_pixels(cw, ch)) fail_too_large(name, cw, ch);
  if (Image still; decode_webp_still_rgb(data, size, still, meta)) return still;
  WebPData wd{data, size};
  WebPAnimDecoderOptions opts;
  if (!WebPAnimDecoderOptionsInit(&opts)) fail("{}: libwebp version mismatch", name);
  opts.color_mode = MODE_RGBA;
  opts.use_threads = 0;
  std::unique_ptr<WebPAnimDecoder, void (*)(WebPAnimDecoder*)> dec(WebPAnimDecoderNew(&wd, &opts),
                                                                   WebPAnimDecoderDelete);
  if (!dec) fail("{}: invalid or corrupt WebP (cannot parse the container); re-encode or remove the file", name);
  WebPAnimInfo info;
  if (!WebPAnimDecoderGetInfo(dec.get(), &info)) fail("{}: invalid or corrupt WebP (no image info)", name);
  uint8_t* buf = nullptr;
  int timestamp = 0;
  if (!WebPAnimDecoderGetNext(dec.get(), &buf, &timestamp))
    fail("{}: invalid or corrupt WebP (cannot decode the first frame); re-encode or remove the file", name);

  const WebPDemuxer* demux = WebPAnimDecoderGetDemuxer(dec.get());
  bool alpha = (WebPDemuxGetI(demux, WEBP_FF_FORMAT_FLAGS) & ALPHA_FLAG) != 0;
  int w = static_cast<int>(info.canvas_width), h = static_cast<int>(info.canvas_height);
  Image out(w, h, alpha ? 4 : 3);
  size_t n = static_cast<size_t>(w) * h;
  if (alpha) {
    std::memcpy(out.pixels.data(), buf, n * 4);
  } else {
    for (size_t i = 0; i < n; ++i) std::memcpy(&out.pixels[3 * i], buf + 4 * i, 3);
  }
  read_webp_metadata(demux, meta);
  return out;
}

// ---------------------------------------------------------------- orientation metadata
// Tag 0x0112 of IFD0, as Pillow's Image.getexif() reads it; when absent, Pillow falls back to the first
// `tiff:Orientation="N"` or `<tiff:Orientation>N` in the XMP packet. 1 when there is neither.
int exif_orientation(const std::vector<uint8_t>& exif) {  // -1: no orientation tag
  if (exif.size() < 8) return -1;
  std::vector<uint8_t> buf;
  if (!starts_with(exif.data(), exif.size(), "Exif\0\0", 6)) {  // libexif wants the APP1 prefix
    buf.assign({'E', 'x', 'i', 'f', 0, 0});
  }
  buf.insert(buf.end(), exif.begin(), exif.end());
  std::unique_ptr<ExifData, void (*)(ExifData*)> ed(exif_data_new(), exif_data_unref);
  if (!ed) return -1;
  // Read what is there: no "fixing" (which may add default tags) and no dropping of tags libexif does not
  // expect in IFD0.
  exif_data_unset_option(ed.get(), EXIF_DATA_OPTION_FOLLOW_SPECIFICATION);
  exif_data_unset_option(ed.get(), EXIF_DATA_OPTION_IGNORE_UNKNOWN_TAGS);
  exif_data_load_data(ed.get(), buf.data(), static_cast<unsigned>(buf.size()));
  ExifEntry* e = exif_content_get_entry(ed->ifd[EXIF_IFD_0], EXIF_TAG_ORIENTATION);
  if (!e || e->components < 1 || !e->data) return -1;
  ExifByteOrder order = exif_data_get_byte_order(ed.get());
  switch (e->format) {
    case EXIF_FORMAT_SHORT: return exif_get_short(e->data, order);
    case EXIF_FORMAT_LONG: return static_cast<int>(exif_get_long(e->data, order));
    case EXIF_FORMAT_BYTE: return e->data[0];
    default: return -1;
  }
}

int xmp_orientation(const std::string& xmp) {
  static const std::regex re(R"(tiff:Orientation(="|>)([0-9]))");
  std::smatch m;
  if (!xmp.empty() && std::regex_search(xmp, m, re)) return m[2].str()[0] - '0';
  return 0;
}

int orientation_of(const OrientationSources& meta) {
  if (int o = exif_orientation(meta.exif); o >= 0) return o;
  return xmp_orientation(meta.xmp);
}

}  // namespace

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

Image decode_image_bytes(const uint8_t* data, size_t size, const std::string& name, int jpeg_draft_min_side) {
  if (size == 0) fail("{}: file is empty; remove it or replace it with a JPEG, PNG or WebP image", name);
  OrientationSources meta;
  Image img;
  switch (sniff(data, size)) {
    case Format::Png: img = decode_png(data, size, name, &meta); break;
    case Format::Jpeg: img = decode_jpeg(data, size, name, &meta, jpeg_draft_min_side); break;
    case Format::Webp: img = decode_webp(data, size, name, &meta); break;
    default:
      fail("{}: not a PNG, JPEG or WebP image (unrecognised first bytes); convert it to one of these formats",
           name);
  }
  return apply_exif_orientation(img, orientation_of(meta));
}

std::vector<PngText> read_png_text(const uint8_t* data, size_t size, const std::string& name) {
  if (sniff(data, size) != Format::Png) fail("{}: not a PNG file (its first bytes are no PNG signature)", name);
  OrientationSources meta;
  decode_png(data, size, name, &meta);  // text after IDAT is only seen once the pixels are read
  return meta.text;
}

namespace {
std::vector<uint8_t> read_image_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail("{}: is a directory, not an image file", path);
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) fail("{}: cannot open image (missing file or no read permission)", path);
  std::streamoff size = f.tellg();
  if (size < 0) fail("{}: cannot determine the file size (not a regular file?)", path);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  f.seekg(0);
  if (!f.read(reinterpret_cast<char*>(bytes.data()), size)) fail("{}: read error", path);
  return bytes;
}
}  // namespace

std::vector<PngText> read_png_text_file(const std::string& path) {
  auto bytes = read_image_file(path);
  return read_png_text(bytes.data(), bytes.size(), path);
}

Image decode_image(const std::string& path, int jpeg_draft_min_side) {
  auto bytes = read_image_file(path);
  return decode_image_bytes(bytes.data(), bytes.size(), path, jpeg_draft_min_side);
}

// ---------------------------------------------------------------- conversions

Image to_rgb(const Image& img) {
  if (img.channels == 3) return img;
  Image out(img.width, img.height, 3);
  size_t n = static_cast<size_t>(img.width) * img.height;
  for (size_t i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c)
      out.pixels[3 * i + c] = img.pixels[i * img.channels + (img.channels == 1 ? 0 : c)];
  return out;
}

Image to_rgba(const Image& img) {
  if (img.channels == 4) return img;
  Image out(img.width, img.height, 4);
  size_t n = static_cast<size_t>(img.width) * img.height;
  for (size_t i = 0; i < n; ++i) {
    for (int c = 0; c < 3; ++c) out.pixels[4 * i + c] = img.pixels[i * img.channels + (img.channels == 1 ? 0 : c)];
    out.pixels[4 * i + 3] = 255;
  }
  return out;
}

Image to_gray(const Image& img) {
  if (img.channels == 1) return img;
  Image out(img.width, img.height, 1);
  size_t n = static_cast<size_t>(img.width) * img.height;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = &img.pixels[i * img.channels];
    // 0.299, 0.587, 0.114 in 16-bit fixed point, rounded (Pillow's L24).
    out.pixels[i] = static_cast<uint8_t>((p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16);
  }
  return out;
}

// ---------------------------------------------------------------- orientation

Image apply_exif_orientation(const Image& img, int orientation) {
  if (orientation < 2 || orientation > 8) return img;
  const int W = img.width, H = img.height;
  bool swap = orientation >= 5;  // 5..8 exchange width and height
  Image out(swap ? H : W, swap ? W : H, img.channels);
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      int sx = 0, sy = 0;  // source pixel of output (x, y)
      switch (orientation) {
        case 2: sx = W - 1 - x; sy = y; break;          // mirror horizontally
        case 3: sx = W - 1 - x; sy = H - 1 - y; break;  // rotate 180
        case 4: sx = x; sy = H - 1 - y; break;          // mirror vertically
        case 5: sx = y; sy = x; break;                  // transpose
        case 6: sx = y; sy = H - 1 - x; break;          // rotate 90 clockwise
        case 7: sx = W - 1 - y; sy = H - 1 - x; break;  // transverse
        case 8: sx = W - 1 - y; sy = x; break;          // rotate 90 counter-clockwise
      }
      std::memcpy(&out.pixels[out.index(x, y)], &img.pixels[img.index(sx, sy)], img.channels);
    }
  }
  return out;
}

}  // namespace iomm
