#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include <torch/torch.h>

#include "core/error.h"
#include "report/image_grid.h"

using namespace iomm;
using namespace iomm::report;

namespace {

// [N, 3, H, W] uint8 where every pixel is distinct: (tile, y, x, channel) encoded in the value.
at::Tensor coded_tiles(int64_t n, int64_t h, int64_t w) {
  auto t = torch::empty({n, 3, h, w}, torch::kUInt8);
  auto a = t.accessor<uint8_t, 4>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) a[i][c][y][x] = static_cast<uint8_t>(i * 40 + c * 10 + y * 3 + x + 1);
  return t;
}

}  // namespace

TEST(ImageGrid, PlacesTilesLikeTorchvisionMakeGrid) {
  // 3 tiles of 2x3 (HxW), 2 per row, pad 1: width 2 * (3 + 1) + 1 = 9, height 2 * (2 + 1) + 1 = 7.
  const auto t = coded_tiles(3, 2, 3);
  const Image g = make_image_grid(t, 2, 1, 1, {7, 8, 9});
  ASSERT_EQ(g.width, 9);
  ASSERT_EQ(g.height, 7);
  ASSERT_EQ(g.channels, 3);
  auto a = t.accessor<uint8_t, 4>();
  for (int y = 0; y < g.height; ++y)
    for (int x = 0; x < g.width; ++x) {
      const int col = (x - 1) / 4, row = (y - 1) / 3, tx = (x - 1) % 4, ty = (y - 1) % 3;
      const int tile = row * 2 + col;
      const bool inside = x >= 1 && y >= 1 && tx < 3 && ty < 2 && tile < 3;
      for (int c = 0; c < 3; ++c) {
        const int want = inside ? a[tile][c][ty][tx] : 7 + c;
        ASSERT_EQ(g.at(x, y, c), want) << "pixel (" << x << ", " << y << ") channel " << c;
      }
    }
}

TEST(ImageGrid, ScaleRepeatsEveryPixelInABlock) {
  const auto t = coded_tiles(2, 2, 2);
  const Image g1 = make_image_grid(t, 2, 1, 2);
  const Image g3 = make_image_grid(t, 2, 3, 2);
  ASSERT_EQ(g3.width, g1.width * 3);
  ASSERT_EQ(g3.height, g1.height * 3);
  for (int y = 0; y < g3.height; ++y)
    for (int x = 0; x < g3.width; ++x)
      for (int c = 0; c < 3; ++c) ASSERT_EQ(g3.at(x, y, c), g1.at(x / 3, y / 3, c));
  EXPECT_EQ(g1.at(0, 0, 0), 255);  // default white pad
  EXPECT_EQ(g1.at(2, 2, 0), 1);    // tile 0, pixel (0, 0), channel 0
}

TEST(ImageGrid, FloatInputIsClampedAndMatchesUint8) {
  const auto u8 = coded_tiles(4, 3, 3);
  const auto f = u8.to(torch::kFloat32) / 255.0;
  EXPECT_EQ(make_image_grid(f, 3), make_image_grid(u8, 3));
  auto wild = torch::zeros({1, 3, 1, 2});
  wild[0][0][0][0] = 1.7;
  wild[0][1][0][1] = -0.3;
  const Image g = make_image_grid(wild, 1, 1, 0);
  EXPECT_EQ(g.at(0, 0, 0), 255);
  EXPECT_EQ(g.at(1, 0, 1), 0);
}

TEST(ImageGrid, GrayIsReplicatedAndColsClampToN) {
  auto gray = torch::full({2, 1, 2, 2}, 0.5);
  const Image g = make_image_grid(gray, 8, 1, 1);
  EXPECT_EQ(g.width, 2 * 3 + 1);  // two columns, not eight
  EXPECT_EQ(g.height, 4);
  for (int c = 0; c < 3; ++c) EXPECT_EQ(g.at(1, 1, c), 128);
}

TEST(ImageGrid, PairGridPutsInputLeftAndOutputRight) {
  const auto in = coded_tiles(3, 2, 2), out = 255 - coded_tiles(3, 2, 2);
  // Pair tiles are 2 + 1 + 2 = 5 wide; 2 pairs per row, pad 1: 2 * 6 + 1 = 13 wide, 2 * 3 + 1 = 7 high.
  const Image g = make_pair_grid(in, out, 2, 1, 1);
  ASSERT_EQ(g.width, 13);
  ASSERT_EQ(g.height, 7);
  auto ai = in.accessor<uint8_t, 4>();
  auto ao = out.accessor<uint8_t, 4>();
  for (int pair = 0; pair < 3; ++pair) {
    const int ox = 1 + (pair % 2) * 6, oy = 1 + (pair / 2) * 3;
    for (int y = 0; y < 2; ++y) {
      for (int x = 0; x < 2; ++x)
        for (int c = 0; c < 3; ++c) {
          ASSERT_EQ(g.at(ox + x, oy + y, c), ai[pair][c][y][x]);
          ASSERT_EQ(g.at(ox + 3 + x, oy + y, c), ao[pair][c][y][x]);
        }
      ASSERT_EQ(g.at(ox + 2, oy + y, 0), 128);  // the grey divider
    }
  }
  EXPECT_EQ(g.at(7, 4, 0), 255);  // the empty fourth slot is padding
  EXPECT_THROW(make_pair_grid(in, coded_tiles(2, 2, 2), 2), Error);
}

TEST(ImageGrid, RejectsBadShapesAndLayouts) {
  EXPECT_THROW(make_image_grid(torch::zeros({3, 4, 4}), 2), Error);
  EXPECT_THROW(make_image_grid(torch::zeros({1, 4, 4, 4}), 2), Error);  // RGBA
  EXPECT_THROW(make_image_grid(torch::zeros({0, 3, 4, 4}), 2), Error);
  EXPECT_THROW(make_image_grid(torch::zeros({1, 3, 4, 4}, torch::kInt32), 2), Error);
  EXPECT_THROW(make_image_grid(torch::zeros({1, 3, 4, 4}), 0), Error);
  EXPECT_THROW(make_image_grid(torch::zeros({1, 3, 4, 4}), 1, 0), Error);
  EXPECT_THROW(make_image_grid(std::vector<Image>{Image(2, 2, 3), Image(3, 2, 3)}, 2), Error);
}

TEST(ImageGrid, WriteImageGridWritesADecodablePng) {
  const auto dir = std::filesystem::temp_directory_path() / ("iomm_grid_test_" + std::to_string(::getpid()));
  const std::string path = (dir / "sub" / "grid.png").string();
  const auto t = coded_tiles(5, 4, 4);
  write_image_grid(t, path, 3, 2, 1);
  EXPECT_EQ(decode_image(path), make_image_grid(t, 3, 2, 1));
  std::filesystem::remove_all(dir);
}
