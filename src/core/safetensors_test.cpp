#include "core/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "core/error.h"

using namespace iomm;
using namespace iomm::safetensors;
namespace fs = std::filesystem;

namespace {

constexpr DType kAllDTypes[] = {DType::BOOL, DType::U8,   DType::I8,  DType::I16, DType::F16,
                                DType::BF16, DType::I32, DType::F32, DType::F64, DType::I64};

// A fresh, empty directory per test.
fs::path scratch_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  fs::path dir = fs::path(::testing::TempDir()) / "iomm_safetensors" / info->test_suite_name() / info->name();
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

// A file with a hand-written header (padded like the writer) and data region; header_len overrides the length field.
void write_raw(const fs::path& p, std::string header, const std::string& data,
               std::optional<uint64_t> header_len = std::nullopt) {
  uint64_t n = header_len.value_or(header.size());
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &n, 8);
  write_bytes(p, bytes + header + data);
}

// A tensor whose bytes are a pattern distinct per tensor, owned by the test (shared, so copies keep `view` valid).
struct OwnedTensor {
  std::shared_ptr<std::vector<std::byte>> bytes;
  TensorView view;
};

OwnedTensor make_tensor(std::string name, DType dt, std::vector<int64_t> shape, int seed) {
  int64_t numel = 1;
  for (auto d : shape) numel *= d;
  auto bytes = std::make_shared<std::vector<std::byte>>(static_cast<size_t>(numel) * dtype_size(dt));
  for (size_t i = 0; i < bytes->size(); ++i)
    (*bytes)[i] = static_cast<std::byte>(dt == DType::BOOL ? (i + seed) % 2 : (i * 37 + seed * 11) & 0xff);
  OwnedTensor t{bytes, {std::move(name), dt, std::move(shape), bytes->data(), bytes->size()}};
  return t;
}

std::vector<TensorView> views(const std::vector<OwnedTensor>& ts) {
  std::vector<TensorView> v;
  for (const auto& t : ts) v.push_back(t.view);
  return v;
}

std::string bytes_of(const TensorView& v) { return std::string(static_cast<const char*>(v.data), v.nbytes); }

// Runs `f`, expects an iomm::Error, and returns its message.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an iomm::Error";
  return "";
}

}  // namespace

TEST(SafetensorsDType, NamesAndSizes) {
  const std::pair<std::string, size_t> expected[] = {{"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"I16", 2}, {"F16", 2},
                                                     {"BF16", 2}, {"I32", 4}, {"F32", 4}, {"F64", 8}, {"I64", 8}};
  for (size_t i = 0; i < std::size(kAllDTypes); ++i) {
    EXPECT_EQ(dtype_name(kAllDTypes[i]), expected[i].first);
    EXPECT_EQ(dtype_size(kAllDTypes[i]), expected[i].second);
    EXPECT_EQ(parse_dtype(expected[i].first), kAllDTypes[i]);
  }
  EXPECT_FALSE(parse_dtype("F8_E4M3"));
  EXPECT_FALSE(parse_dtype("bf16"));  // names are case-sensitive in the format
}

TEST(SafetensorsFile, RoundTripEveryDtype) {
  fs::path path = scratch_dir() / "all.safetensors";
  std::vector<OwnedTensor> ts;
  int seed = 0;
  for (DType dt : kAllDTypes) ts.push_back(make_tensor(fmt::format("t.{}", dtype_name(dt)), dt, {3, 5}, ++seed));
  ts.push_back(make_tensor("scalar", DType::F32, {}, ++seed));
  ts.push_back(make_tensor("empty", DType::F16, {0, 4}, ++seed));
  std::map<std::string, std::string> meta{{"format", "pt"}, {"note", "ünïcode \"quoted\"\n"}};
  write(path.string(), views(ts), meta);

  for (ReadMode mode : {ReadMode::Mmap, ReadMode::Pread}) {
    File f(path.string(), mode);
    EXPECT_EQ(f.metadata(), meta);
    ASSERT_EQ(f.tensors().size(), ts.size());
    for (const auto& t : ts) {
      const TensorInfo& info = f.info(t.view.name);
      EXPECT_EQ(info.dtype, t.view.dtype) << t.view.name;
      EXPECT_EQ(info.shape, t.view.shape) << t.view.name;
      EXPECT_EQ(bytes_of(f.view(t.view.name)), bytes_of(t.view)) << t.view.name;
      std::string copy(info.nbytes(), '\0');
      f.read_into(t.view.name, copy.data(), copy.size());
      EXPECT_EQ(copy, bytes_of(t.view)) << t.view.name;
    }
    EXPECT_EQ(f.info("scalar").numel(), 1);
    EXPECT_EQ(f.info("empty").nbytes(), 0u);
  }
}

TEST(SafetensorsFile, HeaderIsByteIdenticalToPythonLibrary) {
  // safetensors.torch.save({"w": bf16[2,3], "b": f32[3], "s": i64 scalar, "m": bool[0,2]}, {"format": "pt"}) wrote
  // exactly this header (safetensors 0.8.0): dtype-ranked order, then name; two spaces pad it to 8-byte alignment.
  const std::string python_header =
      R"({"__metadata__":{"format":"pt"},"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F32","shape":[3],"data_offsets":[8,20]},"w":{"dtype":"BF16","shape":[2,3],)"
      R"("data_offsets":[20,32]},"m":{"dtype":"BOOL","shape":[0,2],"data_offsets":[32,32]}}  )";
  fs::path path = scratch_dir() / "py.safetensors";
  std::vector<OwnedTensor> ts = {make_tensor("w", DType::BF16, {2, 3}, 1), make_tensor("b", DType::F32, {3}, 2),
                                 make_tensor("s", DType::I64, {}, 3), make_tensor("m", DType::BOOL, {0, 2}, 4)};
  write(path.string(), views(ts), {{"format", "pt"}});
  std::string bytes = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  ASSERT_EQ(n, 256u);
  EXPECT_EQ(bytes.substr(8, n), python_header);
  EXPECT_EQ(bytes.size(), 296u);
  // Data follows in the same order.
  EXPECT_EQ(bytes.substr(8 + n, 8), bytes_of(ts[2].view));
  EXPECT_EQ(bytes.substr(8 + n + 8, 12), bytes_of(ts[1].view));
}

TEST(SafetensorsFile, WriteOrderRanksDtypesThenNames) {
  fs::path path = scratch_dir() / "order.safetensors";
  std::vector<OwnedTensor> ts;
  int seed = 0;
  for (DType dt : kAllDTypes) ts.push_back(make_tensor(fmt::format("z{}", seed), dt, {3}, ++seed));
  ts.push_back(make_tensor("a_f32", DType::F32, {1}, ++seed));
  write(path.string(), views(ts));
  File f(path.string());
  std::vector<std::string> order;
  for (const auto& t : f.tensors()) order.push_back(t.name);
  // I64 > F64 > F32 > I32 > BF16 > F16 > I16 > I8 > U8 > BOOL; within F32, by name.
  EXPECT_EQ(order, (std::vector<std::string>{"z10", "z9", "a_f32", "z8", "z7", "z6", "z5", "z4", "z3", "z2", "z1"}));
  for (const auto& t : f.tensors()) EXPECT_EQ(t.begin % dtype_size(t.dtype), 0u) << t.name;
}

TEST(SafetensorsFile, MmapAndPreadAgree) {
  fs::path path = scratch_dir() / "big.safetensors";
  std::vector<OwnedTensor> ts = {make_tensor("a", DType::F32, {257, 129}, 1), make_tensor("b", DType::BF16, {999}, 2),
                                 make_tensor("c", DType::U8, {13}, 3)};
  write(path.string(), views(ts));
  File m(path.string(), ReadMode::Mmap), p(path.string(), ReadMode::Pread);
  ASSERT_EQ(m.tensors().size(), p.tensors().size());
  for (const auto& t : m.tensors()) {
    TensorView vm = m.view(t.name), vp = p.view(t.name);
    EXPECT_NE(vm.data, vp.data);  // one maps, one owns a copy
    EXPECT_EQ(bytes_of(vm), bytes_of(vp)) << t.name;
    EXPECT_EQ(p.view(t.name).data, vp.data) << "pread views are read once and kept";
  }
}

TEST(SafetensorsFile, MissingTensorNamesFileAndTensor) {
  fs::path path = scratch_dir() / "one.safetensors";
  auto t = make_tensor("present", DType::F32, {2}, 1);
  write(path.string(), {t.view});
  File f(path.string());
  EXPECT_EQ(f.find("absent"), nullptr);
  std::string msg = error_of([&] { f.info("absent"); });
  EXPECT_NE(msg.find("absent"), std::string::npos) << msg;
  EXPECT_NE(msg.find("one.safetensors"), std::string::npos) << msg;
}

// --- corruption: every kind is an iomm::Error naming the file and, where one is involved, the tensor ---

struct Corruption {
  std::string label;
  std::string header;
  std::string data;
  std::optional<uint64_t> header_len;
  std::string tensor;    // must appear in the message ("" when no tensor is involved)
  std::string reason;    // must appear in the message too
};

class SafetensorsCorruption : public ::testing::TestWithParam<Corruption> {};

TEST_P(SafetensorsCorruption, ErrorNamesFileAndTensor) {
  const Corruption& c = GetParam();
  fs::path path = scratch_dir() / (c.label + ".safetensors");
  write_raw(path, c.header, c.data, c.header_len);
  for (ReadMode mode : {ReadMode::Mmap, ReadMode::Pread}) {
    std::string msg = error_of([&] { File f(path.string(), mode); });
    EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
    if (!c.tensor.empty()) EXPECT_NE(msg.find("'" + c.tensor + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.reason), std::string::npos) << msg;
  }
}

static std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, int b, int e) {
  return fmt::format(R"("{}":{{"dtype":"{}","shape":{},"data_offsets":[{},{}]}})", name, dtype, shape, b, e);
}

// A header object from entries.
static std::string obj(std::initializer_list<std::string> entries) {
  return fmt::format("{{{}}}", fmt::join(entries, ","));
}

INSTANTIATE_TEST_SUITE_P(
    Safetensors, SafetensorsCorruption,
    ::testing::Values(
        Corruption{"header_len_past_end", "{}", "", 4096, "", "runs past the end"},
        Corruption{"header_len_absurd", "{}", "", 1ull << 40, "", "exceeds"},
        Corruption{"not_json", "{\"w\": {oops", "", {}, "", "not valid JSON"},
        Corruption{"not_object", "[1, 2]", "", {}, "", "not an object"},
        Corruption{"truncated_data", obj({entry("w", "F32", "[4]", 0, 16)}), std::string(10, 'x'), {}, "w",
                   "past the end"},
        Corruption{"offsets_out_of_range", obj({entry("w", "U8", "[4]", 1000, 1004)}), "abcd", {}, "w",
                   "past the end"},
        Corruption{"overlap",
                   obj({entry("a", "U8", "[4]", 0, 4), entry("b", "U8", "[4]", 2, 6)}), "abcdef", {},
                   "b", "overlap"},
        Corruption{"gap", obj({entry("a", "U8", "[2]", 0, 2), entry("b", "U8", "[2]", 3, 5)}), "abcde",
                   {}, "b", "gap"},
        Corruption{"trailing_bytes", obj({entry("a", "U8", "[2]", 0, 2)}), "abcd", {}, "a", "trailing"},
        Corruption{"unknown_dtype", obj({entry("w", "F8_E4M3", "[2]", 0, 2)}), "ab", {}, "w", "F8_E4M3"},
        Corruption{"negative_shape", obj({entry("w", "U8", "[-2]", 0, 2)}), "ab", {}, "w", "negative"},
        Corruption{"byte_size_mismatch", obj({entry("w", "F32", "[3]", 0, 8)}), "abcdefgh", {}, "w",
                   "takes 12 bytes"},
        Corruption{"end_before_begin", obj({entry("w", "U8", "[0]", 4, 2)}), "abcd", {}, "w", "end before"},
        Corruption{"duplicate_tensor", obj({entry("w", "U8", "[2]", 0, 2), entry("w", "U8", "[2]", 0, 2)}),
                   "ab", {}, "w", "twice"},
        Corruption{"metadata_not_string", R"({"__metadata__":{"epoch":3}})", "", {}, "epoch", "must be strings"},
        Corruption{"missing_offsets", R"({"w":{"dtype":"U8","shape":[2]}})", "ab", {}, "w", "data_offsets"}),
    [](const auto& info) { return info.param.label; });

TEST(SafetensorsCorruptionFile, ShorterThanEightBytes) {
  fs::path path = scratch_dir() / "tiny.safetensors";
  write_bytes(path, "abc");
  std::string msg = error_of([&] { File f(path.string()); });
  EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("shorter than"), std::string::npos) << msg;
}

TEST(SafetensorsCorruptionFile, TruncatedWrittenFileNamesLastTensor) {
  fs::path path = scratch_dir() / "cut.safetensors";
  std::vector<OwnedTensor> ts = {make_tensor("big", DType::F64, {64}, 1), make_tensor("last", DType::U8, {9}, 2)};
  write(path.string(), views(ts));
  fs::resize_file(path, fs::file_size(path) - 3);
  std::string msg = error_of([&] { File f(path.string()); });
  EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("'last'"), std::string::npos) << msg;
}

TEST(SafetensorsCorruptionFile, EmptyAndZeroLengthTensorsAreValid) {
  // The Python library accepts these, so iomm must too.
  fs::path path = scratch_dir() / "zero.safetensors";
  write_raw(path, obj({entry("a", "U8", "[0]", 0, 0), entry("b", "U8", "[0]", 0, 0)}), "");
  File f(path.string());
  EXPECT_EQ(f.tensors().size(), 2u);
  write_raw(path, "  {}  ", "");
  EXPECT_TRUE(File(path.string()).tensors().empty());
}

// --- writing ---

TEST(SafetensorsWrite, AtomicWriteLeavesNoTempAndReplaces) {
  fs::path dir = scratch_dir();
  fs::path path = dir / "w.safetensors";
  auto a = make_tensor("a", DType::F32, {4}, 1);
  write(path.string(), {a.view});
  EXPECT_FALSE(fs::exists(dir / "w.safetensors.tmp"));
  auto b = make_tensor("b", DType::I8, {3}, 2);
  write(path.string(), {b.view});
  File f(path.string());
  ASSERT_EQ(f.tensors().size(), 1u);
  EXPECT_EQ(f.tensors()[0].name, "b");
  EXPECT_EQ(std::vector<fs::path>(fs::directory_iterator(dir), fs::directory_iterator()).size(), 1u);
}

TEST(SafetensorsWrite, FailedWriteKeepsOldFile) {
  fs::path dir = scratch_dir();
  fs::path path = dir / "keep.safetensors";
  auto a = make_tensor("a", DType::F32, {4}, 1);
  write(path.string(), {a.view});
  std::string before = read_bytes(path);
  TensorView bad = a.view;
  bad.nbytes = 12;  // shape [4] of F32 needs 16
  std::string msg = error_of([&] { write(path.string(), {bad}); });
  EXPECT_NE(msg.find("'a'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("keep.safetensors"), std::string::npos) << msg;
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_FALSE(fs::exists(dir / "keep.safetensors.tmp"));
  msg = error_of([&] { write((dir / "no_such_dir" / "x.safetensors").string(), {a.view}); });
  EXPECT_NE(msg.find("no_such_dir"), std::string::npos) << msg;
}

TEST(SafetensorsWrite, RejectsDuplicateAndReservedNames) {
  fs::path dir = scratch_dir();
  auto a = make_tensor("a", DType::F32, {1}, 1);
  EXPECT_NE(error_of([&] { write((dir / "d.safetensors").string(), {a.view, a.view}); }).find("twice"),
            std::string::npos);
  TensorView reserved = a.view;
  reserved.name = "__metadata__";
  EXPECT_NE(error_of([&] { write((dir / "r.safetensors").string(), {reserved}); }).find("reserved"),
            std::string::npos);
}

// --- sharded checkpoints ---

TEST(SafetensorsSharded, SplitsLikeHuggingFaceAndReadsBack) {
  fs::path dir = scratch_dir() / "ckpt";
  // 24, 24, 8, 24, 8, 8 bytes with a 40-byte limit -> [24], [24, 8], [24, 8, 8] (huggingface_hub's docstring example).
  std::vector<OwnedTensor> ts = {make_tensor("l0", DType::F32, {6}, 1), make_tensor("l1", DType::F32, {6}, 2),
                                 make_tensor("l2", DType::F64, {1}, 3), make_tensor("l3", DType::I32, {6}, 4),
                                 make_tensor("l4", DType::I64, {1}, 5), make_tensor("l5", DType::U8, {8}, 6)};
  auto written = write_sharded(dir.string(), views(ts), {{"format", "pt"}}, 40);
  ASSERT_EQ(written.size(), 4u);
  EXPECT_EQ(fs::path(written[0]).filename(), "model-00001-of-00003.safetensors");
  EXPECT_EQ(fs::path(written[2]).filename(), "model-00003-of-00003.safetensors");
  EXPECT_EQ(fs::path(written[3]).filename(), "model.safetensors.index.json");

  auto index = nlohmann::json::parse(read_bytes(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 96);
  EXPECT_EQ(index["metadata"]["total_parameters"], 6 + 6 + 1 + 6 + 1 + 8);
  EXPECT_EQ(index["weight_map"]["l0"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["l2"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["l5"], "model-00003-of-00003.safetensors");
  EXPECT_EQ(File(written[1]).tensors().size(), 2u);

  for (const std::string& open : {dir.string(), (dir / "model.safetensors.index.json").string()}) {
    Checkpoint ckpt(open, ReadMode::Pread);
    EXPECT_EQ(ckpt.files().size(), 3u);
    EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"l0", "l1", "l2", "l3", "l4", "l5"}));
    EXPECT_EQ(ckpt.metadata().at("format"), "pt");
    for (const auto& t : ts) EXPECT_EQ(bytes_of(ckpt.view(t.view.name)), bytes_of(t.view)) << t.view.name;
  }
}

TEST(SafetensorsSharded, OversizedTensorGetsItsOwnShardAndResaveCleansUp) {
  fs::path dir = scratch_dir() / "ckpt";
  std::vector<OwnedTensor> ts = {make_tensor("a", DType::U8, {4}, 1), make_tensor("huge", DType::U8, {20}, 2),
                                 make_tensor("c", DType::U8, {4}, 3)};
  write_sharded(dir.string(), views(ts), {}, 10);
  auto index = nlohmann::json::parse(read_bytes(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"]["huge"], "model-00001-of-00002.safetensors");
  EXPECT_EQ(index["weight_map"]["a"], "model-00002-of-00002.safetensors");
  EXPECT_EQ(index["weight_map"]["c"], "model-00002-of-00002.safetensors");

  // Everything fits one shard now: model.safetensors alone, the old shards and index are gone.
  auto written = write_sharded(dir.string(), views(ts), {}, 1000);
  ASSERT_EQ(written.size(), 1u);
  EXPECT_EQ(fs::path(written[0]).filename(), "model.safetensors");
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir)) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(Checkpoint(dir.string()).size(), 3u);
}

class SafetensorsIndexErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = scratch_dir();
    ts = {make_tensor("a", DType::U8, {8}, 1), make_tensor("b", DType::U8, {8}, 2)};
    write_sharded(dir.string(), views(ts), {}, 8);
    index_path = dir / "model.safetensors.index.json";
    index = nlohmann::json::parse(read_bytes(index_path));
  }
  std::string open_error() {
    write_bytes(index_path, index.dump());
    return error_of([&] { Checkpoint c(dir.string()); });
  }
  fs::path dir, index_path;
  std::vector<OwnedTensor> ts;
  nlohmann::json index;
};

TEST_F(SafetensorsIndexErrors, MissingShard) {
  fs::remove(dir / "model-00002-of-00002.safetensors");
  std::string msg = open_error();
  EXPECT_NE(msg.find("model.safetensors.index.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'b'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model-00002-of-00002.safetensors"), std::string::npos) << msg;
}

TEST_F(SafetensorsIndexErrors, TensorMissingInItsShard) {
  index["weight_map"]["b"] = "model-00001-of-00002.safetensors";
  std::string msg = open_error();
  EXPECT_NE(msg.find("'b'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("has no such tensor"), std::string::npos) << msg;
}

TEST_F(SafetensorsIndexErrors, TensorInTwoShards) {
  auto dup = make_tensor("a", DType::U8, {8}, 9);
  write((dir / "model-00002-of-00002.safetensors").string(), {ts[1].view, dup.view});
  std::string msg = open_error();
  EXPECT_NE(msg.find("'a'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("both"), std::string::npos) << msg;
}

TEST_F(SafetensorsIndexErrors, ShardOutsideTheIndexDirectoryIsRefused) {
  // A readable file with the tensor, outside the checkpoint: it used to be read.
  fs::path outside = dir.parent_path() / (dir.filename().string() + "-outside.safetensors");
  write(outside.string(), {ts[1].view});
  for (const std::string& shard : {outside.string(), "../" + outside.filename().string(),
                                   "sub/../../" + outside.filename().string()}) {
    index["weight_map"]["b"] = shard;
    std::string msg = open_error();
    EXPECT_NE(msg.find(index_path.string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("'b'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'" + shard + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("not a file inside the index's directory"), std::string::npos) << msg;
  }
  // Relative names that stay inside are fine.
  index["weight_map"]["b"] = "./model-00002-of-00002.safetensors";
  write_bytes(index_path, index.dump());
  EXPECT_EQ(Checkpoint(dir.string()).size(), 2u);
}

TEST_F(SafetensorsIndexErrors, NoWeightMap) {
  index.erase("weight_map");
  std::string msg = open_error();
  EXPECT_NE(msg.find("weight_map"), std::string::npos) << msg;
  EXPECT_NE(msg.find(index_path.string()), std::string::npos) << msg;
}

// --- opening directories ---

TEST(SafetensorsCheckpoint, ResolvesDirectories) {
  fs::path dir = scratch_dir();
  auto a = make_tensor("a", DType::F32, {2}, 1);
  std::string msg = error_of([&] { Checkpoint c(dir.string()); });
  EXPECT_NE(msg.find("no model.safetensors"), std::string::npos) << msg;

  write((dir / "ae.safetensors").string(), {a.view});  // a lone file of any name is the checkpoint
  EXPECT_EQ(Checkpoint(dir.string()).source(), (dir / "ae.safetensors").string());
  write((dir / "other.safetensors").string(), {a.view});
  msg = error_of([&] { Checkpoint c(dir.string()); });
  EXPECT_NE(msg.find("several"), std::string::npos) << msg;
  write((dir / "model.safetensors").string(), {a.view});  // model.safetensors wins
  EXPECT_EQ(Checkpoint(dir.string()).source(), (dir / "model.safetensors").string());

  msg = error_of([&] { Checkpoint c((dir / "nope").string()); });
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  Checkpoint c(dir.string());
  msg = error_of([&] { c.info("missing.weight"); });
  EXPECT_NE(msg.find("'missing.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
}
