#include "core/tensor_io.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "core/error.h"

using namespace iomm;
namespace fs = std::filesystem;

namespace {

fs::path scratch_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path dir = fs::path(::testing::TempDir()) / "iomm_tensor_io" / info->name();
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// One random tensor of every dtype iomm stores, with awkward shapes (scalar, empty).
std::map<std::string, at::Tensor> sample_tensors() {
  torch::manual_seed(0);
  auto f = torch::randn({4, 3});
  return {
      {"f32", f},
      {"f64", torch::randn({2, 2}, torch::kFloat64)},
      {"f16", torch::randn({5}, torch::kFloat16)},
      {"bf16", torch::randn({3, 1, 2}, torch::kBFloat16)},
      {"i64", torch::randint(-1000000, 1000000, {6}, torch::kInt64)},
      {"i32", torch::randint(-100000, 100000, {2, 3}, torch::kInt32)},
      {"i16", torch::randint(-30000, 30000, {7}, torch::kInt16)},
      {"i8", torch::randint(-128, 127, {9}, torch::kInt8)},
      {"u8", torch::randint(0, 255, {9}, torch::kUInt8)},
      {"bool", torch::rand({3, 3}) > 0.5},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::empty({0, 4}, torch::kFloat16)},
      {"transposed", f.t()},  // not contiguous: saved as its values
  };
}

void expect_same(const std::map<std::string, at::Tensor>& a, const std::map<std::string, at::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    const at::Tensor& u = b.at(name);
    EXPECT_EQ(t.scalar_type(), u.scalar_type()) << name;
    EXPECT_EQ(t.sizes(), u.sizes()) << name;
    EXPECT_TRUE(torch::equal(t, u)) << name;
  }
}

}  // namespace

TEST(SafetensorsTensorIo, DtypeMappingBothWays) {
  using safetensors::DType;
  for (DType d : {DType::BOOL, DType::U8, DType::I8, DType::I16, DType::F16, DType::BF16, DType::I32, DType::F32,
                  DType::F64, DType::I64}) {
    at::ScalarType st = to_scalar_type(d);
    EXPECT_EQ(to_safetensors_dtype(st), d) << safetensors::dtype_name(d);
    EXPECT_EQ(c10::elementSize(st), safetensors::dtype_size(d)) << safetensors::dtype_name(d);
  }
  EXPECT_EQ(to_scalar_type(DType::BF16), at::kBFloat16);
  EXPECT_EQ(to_scalar_type(DType::BOOL), at::kBool);
  EXPECT_THROW(to_safetensors_dtype(at::kComplexFloat), Error);
}

TEST(SafetensorsTensorIo, RoundTripEveryDtypeBothReadModes) {
  fs::path path = scratch_dir() / "t.safetensors";
  auto tensors = sample_tensors();
  save_tensors(path.string(), tensors, {{"step", "12"}});
  expect_same(tensors, load_tensors(path.string(), safetensors::ReadMode::Mmap));
  expect_same(tensors, load_tensors(path.string(), safetensors::ReadMode::Pread));
  safetensors::Checkpoint ckpt(path.string());
  EXPECT_EQ(ckpt.metadata().at("step"), "12");
  EXPECT_FALSE(ckpt.info("transposed").shape.empty());
  EXPECT_EQ(ckpt.info("transposed").shape, (std::vector<int64_t>{3, 4}));
}

TEST(SafetensorsTensorIo, LoadedTensorsOwnTheirMemory) {
  fs::path path = scratch_dir() / "own.safetensors";
  save_tensors(path.string(), {{"w", torch::arange(10, torch::kFloat32)}});
  at::Tensor w;
  {
    safetensors::Checkpoint ckpt(path.string());
    w = load_tensor(ckpt, "w");
  }  // the mapping is gone; the tensor must still hold its values
  fs::remove(path);
  EXPECT_TRUE(torch::equal(w, torch::arange(10, torch::kFloat32)));
  w.add_(1);  // and be writable
  EXPECT_EQ(w[0].item<float>(), 1.0f);
}

TEST(SafetensorsTensorIo, ShardedSaveAndSingleTensorLoad) {
  fs::path dir = scratch_dir() / "ckpt";
  auto tensors = sample_tensors();
  auto written = save_tensors_sharded(dir.string(), tensors, {{"format", "pt"}}, 64);
  EXPECT_GT(written.size(), 2u);
  expect_same(tensors, load_tensors(dir.string()));
  safetensors::Checkpoint ckpt(dir.string(), safetensors::ReadMode::Pread);
  EXPECT_TRUE(torch::equal(load_tensor(ckpt, "bf16"), tensors.at("bf16")));
  EXPECT_THROW(load_tensor(ckpt, "nope"), Error);
}

TEST(SafetensorsTensorIo, UnsupportedDtypeNamesIt) {
  fs::path path = scratch_dir() / "c.safetensors";
  try {
    save_tensors(path.string(), {{"z", torch::zeros({2}, torch::kComplexFloat)}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ComplexFloat"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'z'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("c.safetensors"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(path));
}
