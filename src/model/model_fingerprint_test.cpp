#include "model/model_fingerprint.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/fs.h"

using namespace iomm;
namespace fs = std::filesystem;

namespace {
// A copy of the golden fixture's model directory and its MLLM (iomm.toml names it "../mllm").
fs::path copy_fixture(const std::string& name) {
  auto d = fs::temp_directory_path() / ("iomm_fingerprint_test_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  fs::path src = fs::path(IOMM_SOURCE_DIR) / "tests/fixtures/iomm_step";
  fs::copy(src / "model", d / "model", fs::copy_options::recursive);
  fs::copy(src / "mllm", d / "mllm", fs::copy_options::recursive);
  return d / "model";
}
}  // namespace

TEST(ModelFingerprint, Sha256OfKnownBytes) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(ModelFingerprint, StableAcrossCopiesAndChangedByAnyWeight) {
  auto a = copy_fixture("a"), b = copy_fixture("b");
  auto fa = model_fingerprint(a.string());
  EXPECT_EQ(fa.rfind("sha256:", 0), 0u);
  EXPECT_EQ(fa.size(), 7u + 64u);
  EXPECT_EQ(model_fingerprint(b.string()), fa);  // another place, same files
  // The manifest is sha256sum's format over the files, so the value can be checked with coreutils.
  std::string manifest;
  for (auto name : {"generator/config.json", "generator/model.safetensors", "iomm.toml", "mllm/config.json",
                    "mllm/model.safetensors", "mllm/tokenizer.json", "rqa.safetensors"}) {
    std::string n = name;
    auto path = n.rfind("mllm/", 0) == 0 ? (a.parent_path() / n).string() : (a / n).string();
    manifest += sha256_file(path) + "  " + n + "\n";
  }
  EXPECT_EQ(fa, "sha256:" + sha256_hex(manifest));
  // One byte of the MLLM's weights, or of the generator's, gives another fingerprint.
  auto flip = [](const fs::path& p) {
    std::string bytes = read_file(p.string());
    bytes[bytes.size() - 1] ^= 1;
    write_file_atomic(p.string(), bytes);
  };
  flip(b.parent_path() / "mllm/model.safetensors");
  auto fb = model_fingerprint(b.string());
  EXPECT_NE(fb, fa);
  flip(b / "generator/model.safetensors");
  EXPECT_NE(model_fingerprint(b.string()), fb);
  fs::remove_all(a.parent_path().parent_path());
}
