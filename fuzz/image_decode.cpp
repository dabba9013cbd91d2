// PNG, JPEG and WebP decoding (format by magic bytes, EXIF orientation), PNG text chunks, and what training does
// next with a decoded image: convert to RGB, resize the shorter side and centre-crop.
#include <webp/decode.h>

#include <algorithm>

#include "data/image.h"
#include "fuzz_util.h"

using namespace iomm;

namespace {

// The pixel count an input declares (PNG IHDR, JPEG SOFn, WebP), or 0 when it cannot tell. Valid images of 100
// megapixels fit in a few hundred bytes and take 5-35 s each under ASan (about 1 s in Release, like Pillow): the
// target leaves images over 4 MP to the unit tests of the decompression-bomb limit, so that the fuzzer's time goes
// to the parsers. Decoding does the same work per pixel at any size.
uint64_t declared_pixels(const uint8_t* d, size_t n) {
  auto be16 = [&](size_t i) { return uint64_t(d[i]) << 8 | d[i + 1]; };
  auto be32 = [&](size_t i) { return be16(i) << 16 | be16(i + 2); };
  if (n >= 24 && d[0] == 0x89 && d[1] == 'P') return be32(16) * be32(20);
  if (n >= 4 && d[0] == 0xFF && d[1] == 0xD8) {
    uint64_t most = 0;
    for (size_t i = 2; i + 9 < n; ++i)  // every SOFn-looking marker, as a corrupt stream may hold several
      if (d[i] == 0xFF && d[i + 1] >= 0xC0 && d[i + 1] <= 0xCF && d[i + 1] != 0xC4 && d[i + 1] != 0xC8 &&
          d[i + 1] != 0xCC)
        most = std::max(most, be16(i + 5) * be16(i + 7));
    return most;
  }
  int w = 0, h = 0;
  return WebPGetInfo(d, n, &w, &h) ? uint64_t(w) * uint64_t(h) : 0;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (declared_pixels(data, size) > (4u << 20)) return 0;
  fuzz::refusal_is_fine([&] {
    const Image img = decode_image_bytes(data, size, "fuzz.img");
    if (img.pixels.size() != size_t(img.width) * img.height * img.channels) __builtin_trap();
    // Resizing is linear in the pixels: only small images, so that one big picture does not stall the run.
    if (uint64_t(img.width) * img.height <= 1 << 16) (void)resize_shorter_side_center_crop(to_rgb(img), 8, Resample::Bicubic);
  });
  fuzz::refusal_is_fine([&] { (void)read_png_text(data, size, "fuzz.png"); });
  return 0;
}
