// PNG, JPEG and WebP decoding (format by magic bytes, EXIF orientation), PNG text chunks, and what training does
// next with a decoded image: convert to RGB, resize the shorter side and centre-crop.
#include "data/image.h"
#include "fuzz_util.h"

using namespace iomm;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::refusal_is_fine([&] {
    const Image img = decode_image_bytes(data, size, "fuzz.img");
    if (img.pixels.size() != size_t(img.width) * img.height * img.channels) __builtin_trap();
    // Resizing is linear in the pixels: only small images, so that one big picture does not stall the run.
    if (uint64_t(img.width) * img.height <= 1 << 16) (void)resize_shorter_side_center_crop(to_rgb(img), 8, Resample::Bicubic);
  });
  fuzz::refusal_is_fine([&] { (void)read_png_text(data, size, "fuzz.png"); });
  return 0;
}
