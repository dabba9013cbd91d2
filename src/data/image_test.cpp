#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.h"
#include "data/image.h"

using namespace iomm;

namespace {

Image random_image(int w, int h, int c, uint32_t seed) {
  Image img(w, h, c);
  std::mt19937 rng(seed);
  for (auto& p : img.pixels) p = static_cast<uint8_t>(rng() & 0xFF);
  return img;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / fmt::format("iomm_image_test_{}_{}", ::getpid(), name)).string();
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

TEST(ImagePng, RoundTripAllChannelCounts) {
  for (int c : {1, 3, 4}) {
    Image img = random_image(7, 13, c, 100 + c);
    std::vector<uint8_t> png = encode_png(img);
    Image back = decode_image_bytes(png.data(), png.size(), "mem.png");
    EXPECT_EQ(back.width, 7);
    EXPECT_EQ(back.height, 13);
    EXPECT_EQ(back.channels, c);
    EXPECT_TRUE(back == img) << "channels " << c;
  }
}

TEST(ImagePng, WritePngIsReadableAndLeavesNoTemp) {
  Image img = random_image(5, 3, 3, 7);
  std::string path = temp_path("w.png");
  write_png(img, path);
  EXPECT_TRUE(decode_image(path) == img);
  for (auto& e : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path()))
    EXPECT_EQ(e.path().string().find(path + ".tmp"), std::string::npos) << e.path();
  std::filesystem::remove(path);
}

TEST(ImageDecode, CorruptFileErrorNamesTheFile) {
  Image img = random_image(16, 16, 3, 3);
  std::vector<uint8_t> png = encode_png(img);
  png.resize(png.size() / 2);  // truncated inside IDAT
  std::string path = temp_path("broken.png");
  write_bytes(path, png);
  try {
    decode_image(path);
    FAIL() << "no error for a truncated PNG";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("PNG"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}

TEST(ImageDecode, UnknownFormatAndMissingFile) {
  const uint8_t junk[] = {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '!'};
  try {
    decode_image_bytes(junk, sizeof junk, "notes.jpg");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("notes.jpg"), std::string::npos) << e.what();
  }
  EXPECT_THROW(decode_image(temp_path("does_not_exist.png")), Error);
}
