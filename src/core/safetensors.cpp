#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"

namespace iomm::safetensors {

// The format is little-endian; so is every machine iomm targets, which lets bytes go to and from memory unchanged.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},   {DType::I8, "I8", 1},   {DType::I16, "I16", 2},
    {DType::F16, "F16", 2},   {DType::BF16, "BF16", 2}, {DType::I32, "I32", 4}, {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},   {DType::I64, "I64", 8},
};

const DTypeEntry& entry(DType d) {
  for (const auto& e : kDTypes)
    if (e.dtype == d) return e;
  fail("internal error: unknown safetensors dtype {}", static_cast<int>(d));
}

std::string supported_dtypes() {
  std::string s;
  for (const auto& e : kDTypes) s += (s.empty() ? "" : ", ") + std::string(e.name);
  return s;
}

std::string errno_text() { return std::strerror(errno); }

// prod(shape) with overflow detection; nullopt on overflow.
std::optional<uint64_t> checked_numel(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return std::nullopt;
  return n;
}

// JSON parse that also rejects duplicate keys in any object: nlohmann keeps one of them silently, and a tensor named
// twice in a header (or an index) is corruption worth naming.
json parse_json_unique_keys(const std::string& text, const std::string& file, std::string_view what) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  auto on_event = [&](int, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (ev == json::parse_event_t::object_end) {
      open_objects.pop_back();
    } else if (ev == json::parse_event_t::key && !open_objects.empty()) {
      auto key = parsed.get<std::string>();
      if (!open_objects.back().insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text, on_event);
  } catch (const json::exception& e) {
    fail("'{}': the {} is not valid JSON ({}): the file is corrupt or not a safetensors {}", file, what, e.what(),
         what);
  }
  if (!duplicate.empty())
    fail("'{}': the {} names '{}' twice: the file is corrupt; re-export it", file, what, duplicate);
  return j;
}

// A shard must lie in the index's directory (or below it): an index that names an absolute path or climbs out
// with `..` would make a downloaded checkpoint read any file the user can read.
void check_shard_inside(const std::string& index_path, const std::string& tensor, const std::string& shard) {
  const fs::path p(shard), normal = fs::path(shard).lexically_normal();
  if (shard.empty() || p.has_root_path() || normal.empty() || *normal.begin() == "..")
    fail("'{}': weight_map names shard '{}' for tensor '{}', which is not a file inside the index's directory: "
         "shards must be relative names such as model-00001-of-00002.safetensors; fix the index or re-export the "
         "checkpoint",
         index_path, shard, tensor);
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------------
// dtypes

std::string_view dtype_name(DType d) { return entry(d).name; }
size_t dtype_size(DType d) { return entry(d).size; }
int dtype_write_rank(DType d) { return static_cast<int>(d); }  // the enum is declared in the Python lib's order

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& e : kDTypes)
    if (e.name == name) return e.dtype;
  return std::nullopt;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated on open: fits, non-negative
  return n;
}

int64_t TensorView::numel() const {
  auto n = checked_numel(shape);
  if (!n || *n > static_cast<uint64_t>(INT64_MAX)) fail("tensor '{}': shape {} is negative or overflows", name, shape);
  return static_cast<int64_t>(*n);
}

// ---------------------------------------------------------------------------------------------------------------------
// File

File::File(std::string path, ReadMode mode) : path_(std::move(path)), mode_(mode) {
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail("cannot open safetensors file '{}': {}", path_, errno_text());
  try {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) fail("cannot stat '{}': {}", path_, errno_text());
    if (!S_ISREG(st.st_mode))
      fail("'{}' is not a regular file: pass a .safetensors file (directories are opened as a Checkpoint)", path_);
    file_size_ = static_cast<uint64_t>(st.st_size);
    uint64_t header_len = 0;
    if (file_size_ >= 8) pread_exact(&header_len, 8, 0, "the header length");
    check_header_length(header_len);
    std::string header(header_len, '\0');
    pread_exact(header.data(), header_len, 8, "the header");
    parse_header(header);
    validate_layout();
    if (mode_ == ReadMode::Mmap) {
      void* p = ::mmap(nullptr, file_size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      if (p == MAP_FAILED)
        fail("cannot mmap '{}' ({} bytes): {}; try the pread read mode", path_, file_size_, errno_text());
      map_ = static_cast<const std::byte*>(p);
      ::close(fd_);  // the mapping keeps the file; many shards should not hold many descriptors
      fd_ = -1;
    }
  } catch (...) {
    if (fd_ >= 0) ::close(fd_);
    throw;
  }
}

void File::check_header_length(uint64_t header_len) {
  if (file_size_ < 8)
    fail("'{}' is {} bytes, shorter than the 8-byte header length every safetensors file starts with: the file is "
         "truncated or not safetensors",
         path_, file_size_);
  if (header_len > kMaxHeaderBytes)
    fail("'{}': header length {} exceeds the {} bytes safetensors allows: the file is corrupt or not safetensors",
         path_, header_len, kMaxHeaderBytes);
  if (header_len > file_size_ - 8)
    fail("'{}': header length {} runs past the end of the {}-byte file: the file is truncated or corrupt", path_,
         header_len, file_size_);
  data_start_ = 8 + header_len;
}

std::unique_ptr<File> File::from_bytes(std::string name, std::string bytes) {
  std::unique_ptr<File> f(new File());
  f->path_ = std::move(name);
  f->mode_ = ReadMode::Mmap;
  f->owned_ = std::move(bytes);
  f->file_size_ = f->owned_.size();
  uint64_t header_len = 0;
  if (f->file_size_ >= 8) std::memcpy(&header_len, f->owned_.data(), 8);
  f->check_header_length(header_len);
  f->parse_header(f->owned_.substr(8, header_len));
  f->validate_layout();
  f->map_ = reinterpret_cast<const std::byte*>(f->owned_.data());
  return f;
}

File::~File() {
  if (map_ && owned_.empty()) ::munmap(const_cast<std::byte*>(map_), file_size_);
  if (fd_ >= 0) ::close(fd_);
}

void File::pread_exact(void* dst, uint64_t n, uint64_t offset, std::string_view what) const {
  auto* out = static_cast<char*>(dst);
  while (n > 0) {
    // Linux transfers at most ~2 GiB per call.
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, uint64_t{1} << 30));
    ssize_t got = ::pread(fd_, out, chunk, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail("reading {} of '{}' failed: {}", what, path_, errno_text());
    if (got == 0) fail("'{}' ended while reading {}: the file was truncated while open", path_, what);
    out += got;
    offset += static_cast<uint64_t>(got);
    n -= static_cast<uint64_t>(got);
  }
}

void File::parse_header(const std::string& header) {
  json j = parse_json_unique_keys(header, path_, "safetensors header");
  if (!j.is_object())
    fail("'{}': the safetensors header is a JSON {}, not an object of tensors: the file is corrupt", path_,
         j.type_name());
  for (auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      if (!value.is_object())
        fail("'{}': __metadata__ is a JSON {}, not an object of strings: the file is corrupt", path_,
             value.type_name());
      for (auto& [mk, mv] : value.items()) {
        if (!mv.is_string())
          fail("'{}': __metadata__ entry '{}' is a JSON {}; safetensors metadata values must be strings", path_, mk,
               mv.type_name());
        metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    if (!value.is_object())
      fail("'{}': tensor '{}': header entry is a JSON {}, not an object with dtype, shape, data_offsets", path_, key,
           value.type_name());
    TensorInfo t;
    t.name = key;
    auto dt = value.find("dtype");
    if (dt == value.end() || !dt->is_string())
      fail("'{}': tensor '{}': missing or non-string 'dtype' in the header", path_, key);
    auto parsed = parse_dtype(dt->get<std::string>());
    if (!parsed)
      fail("'{}': tensor '{}' has dtype '{}', which iomm does not read (supported: {}); convert the checkpoint to one "
           "of those",
           path_, key, dt->get<std::string>(), supported_dtypes());
    t.dtype = *parsed;
    auto shape = value.find("shape");
    if (shape == value.end() || !shape->is_array())
      fail("'{}': tensor '{}': missing or non-list 'shape' in the header", path_, key);
    for (const auto& d : *shape) {
      if (d.is_number_integer() && !d.is_number_unsigned())
        fail("'{}': tensor '{}': shape {} has a negative dimension: the file is corrupt", path_, key, shape->dump());
      if (!d.is_number_unsigned() || d.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
        fail("'{}': tensor '{}': shape {} is not a list of non-negative integers: the file is corrupt", path_, key,
             shape->dump());
      t.shape.push_back(d.get<int64_t>());
    }
    auto offs = value.find("data_offsets");
    if (offs == value.end() || !offs->is_array() || offs->size() != 2 || !(*offs)[0].is_number_unsigned() ||
        !(*offs)[1].is_number_unsigned())
      fail("'{}': tensor '{}': 'data_offsets' must be two non-negative integers [begin, end], got {}", path_, key,
           offs == value.end() ? "nothing" : offs->dump());
    t.begin = (*offs)[0].get<uint64_t>();
    t.end = (*offs)[1].get<uint64_t>();
    tensors_.push_back(std::move(t));
  }
}

void File::validate_layout() {
  const uint64_t data_bytes = file_size_ - data_start_;
  for (const auto& t : tensors_) {
    if (t.end < t.begin)
      fail("'{}': tensor '{}': data_offsets [{}, {}] end before they begin: the file is corrupt", path_, t.name,
           t.begin, t.end);
    auto numel = checked_numel(t.shape);
    uint64_t expected = 0;
    if (!numel || *numel > static_cast<uint64_t>(INT64_MAX) ||
        __builtin_mul_overflow(*numel, dtype_size(t.dtype), &expected))
      fail("'{}': tensor '{}': shape {} overflows: the file is corrupt", path_, t.name, t.shape);
    if (expected != t.nbytes())
      fail("'{}': tensor '{}': shape {} of {} takes {} bytes but data_offsets [{}, {}] span {}: the header is corrupt",
           path_, t.name, t.shape, dtype_name(t.dtype), expected, t.begin, t.end, t.nbytes());
    if (t.end > data_bytes)
      fail("'{}': tensor '{}': data_offsets [{}, {}] run past the end of the {}-byte data region: the file is "
           "truncated or corrupt",
           path_, t.name, t.begin, t.end, data_bytes);
  }
  // Like the Python library: sorted by offsets, the tensors must tile the data region exactly.
  std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t pos = 0;
  const TensorInfo* prev = nullptr;
  for (const auto& t : tensors_) {
    if (t.begin < pos)
      fail("'{}': tensor '{}': data_offsets [{}, {}] overlap tensor '{}' (which ends at {}): the file is corrupt",
           path_, t.name, t.begin, t.end, prev->name, pos);
    if (t.begin > pos)
      fail("'{}': tensor '{}': data_offsets [{}, {}] leave a gap of {} bytes after {}: safetensors requires the "
           "tensors to cover the data region exactly; the file is corrupt",
           path_, t.name, t.begin, t.end, t.begin - pos,
           prev ? fmt::format("tensor '{}'", prev->name) : std::string("the header"));
    pos = t.end;
    prev = &t;
  }
  if (pos != data_bytes)
    fail("'{}': the data region is {} bytes but the tensors cover only {} (last tensor: '{}'): {} trailing bytes "
         "belong to no tensor; the file is corrupt",
         path_, data_bytes, pos, prev ? prev->name : std::string("none"), data_bytes - pos);
  for (size_t i = 0; i < tensors_.size(); ++i) by_name_.emplace(tensors_[i].name, i);
}

const TensorInfo* File::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::info(std::string_view name) const {
  if (const auto* t = find(name)) return *t;
  fail("tensor '{}' is not in '{}' ({} tensors): check the name with `iomm inspect {}`", name, path_,
       tensors_.size(), path_);
}

TensorView File::view(std::string_view name) const {
  const TensorInfo& t = info(name);
  TensorView v{t.name, t.dtype, t.shape, nullptr, t.nbytes()};
  if (map_) {
    v.data = map_ + data_start_ + t.begin;
    return v;
  }
  std::lock_guard lock(cache_mu_);
  auto& buf = pread_cache_[t.name];
  if (!buf) {
    auto fresh = std::make_unique<std::byte[]>(std::max<uint64_t>(t.nbytes(), 1));
    pread_exact(fresh.get(), t.nbytes(), data_start_ + t.begin, fmt::format("tensor '{}'", t.name));
    buf = std::move(fresh);
  }
  v.data = buf.get();
  return v;
}

void File::read_into(std::string_view name, void* dst, uint64_t dst_bytes) const {
  const TensorInfo& t = info(name);
  if (dst_bytes != t.nbytes())
    fail("'{}': tensor '{}' is {} bytes but the destination holds {}", path_, t.name, t.nbytes(), dst_bytes);
  if (map_)
    std::memcpy(dst, map_ + data_start_ + t.begin, t.nbytes());
  else
    pread_exact(dst, t.nbytes(), data_start_ + t.begin, fmt::format("tensor '{}'", t.name));
}

// ---------------------------------------------------------------------------------------------------------------------
// Checkpoint

namespace {

// The weights file in a model directory, in the order Hugging Face's loaders look for them.
std::string resolve_directory(const fs::path& dir) {
  for (const char* name : {"model.safetensors", "model.safetensors.index.json"})
    if (fs::is_regular_file(dir / name)) return (dir / name).string();
  std::vector<std::string> indexes, files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::string n = e.path().filename().string();
    if (ends_with(n, ".safetensors.index.json")) indexes.push_back(e.path().string());
    if (ends_with(n, ".safetensors")) files.push_back(e.path().string());
  }
  std::sort(indexes.begin(), indexes.end());
  std::sort(files.begin(), files.end());
  if (indexes.size() == 1) return indexes[0];
  if (indexes.size() > 1)
    fail("directory '{}' holds several safetensors indexes ({}): pass the one to use", dir.string(),
         fmt::join(indexes, ", "));
  if (files.size() == 1) return files[0];
  if (files.size() > 1)
    fail("directory '{}' holds several .safetensors files and no index ({}): pass the file to use, or add a "
         "*.safetensors.index.json",
         dir.string(), fmt::join(files, ", "));
  fail("directory '{}' holds no model.safetensors, no *.safetensors.index.json and no *.safetensors file: pass a "
       "checkpoint directory or file",
       dir.string());
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open '{}': {}", path, errno_text());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

Checkpoint::Checkpoint(const std::string& path, ReadMode mode) : path_(path) {
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (ec || !fs::exists(status))
    fail("checkpoint '{}' does not exist: pass a .safetensors file, a *.safetensors.index.json, or a directory "
         "holding model.safetensors",
         path);
  source_ = fs::is_directory(status) ? resolve_directory(path) : path;
  if (ends_with(source_, ".json")) {
    open_index(source_, mode);
  } else {
    files_.push_back(std::make_unique<File>(source_, mode));
    for (const auto& t : files_[0]->tensors()) where_.emplace(t.name, files_[0].get());
  }
  for (const auto& f : files_)
    for (const auto& [k, v] : f->metadata()) metadata_.emplace(k, v);
}

void Checkpoint::open_index(const std::string& index_path, ReadMode mode) {
  json index = parse_json_unique_keys(read_text_file(index_path), index_path, "safetensors index");
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail("'{}': a safetensors index must be a JSON object with a 'weight_map' object (tensor name -> shard file)",
         index_path);
  const fs::path dir = fs::path(index_path).parent_path();
  const json& weight_map = index["weight_map"];
  // Shards open in file-name order, so "the first shard" (metadata) means model-00001-of-...
  std::map<std::string, File*> shards;  // shard file name as written in the index -> opened file
  for (auto& [name, shard] : weight_map.items()) {
    if (!shard.is_string())
      fail("'{}': weight_map entry for tensor '{}' is a JSON {}, not a shard file name", index_path, name,
           shard.type_name());
    check_shard_inside(index_path, name, shard.get<std::string>());
    shards.emplace(shard.get<std::string>(), nullptr);
  }
  for (auto& [shard_name, file] : shards) {
    fs::path shard_path = dir / shard_name;
    if (!fs::is_regular_file(shard_path)) {
      std::string first_tensor;
      for (auto& [name, shard] : weight_map.items())
        if (shard == shard_name) {
          first_tensor = name;
          break;
        }
      fail("'{}': tensor '{}' is in shard '{}', which does not exist at '{}': the checkpoint is incomplete; "
           "download or copy the missing shard",
           index_path, first_tensor, shard_name, shard_path.string());
    }
    files_.push_back(std::make_unique<File>(shard_path.string(), mode));
    file = files_.back().get();
  }
  for (auto& [name, shard] : weight_map.items()) {
    const File* file = shards.at(shard.get<std::string>());
    if (!file->find(name))
      fail("'{}': tensor '{}' is mapped to shard '{}', but that file has no such tensor: the index does not match "
           "its shards; re-export the checkpoint",
           index_path, name, file->path());
    where_.emplace(name, file);
  }
  // A tensor stored in two shards would be ambiguous; one stored but not indexed is ignored, as Hugging Face does.
  std::map<std::string_view, const File*> seen;
  for (const auto& f : files_) {
    for (const auto& t : f->tensors()) {
      auto [it, fresh] = seen.emplace(t.name, f.get());
      if (!fresh)
        fail("'{}': tensor '{}' is stored in both '{}' and '{}': a sharded checkpoint must hold each tensor once; "
             "re-export it",
             index_path, t.name, it->second->path(), f->path());
      if (!where_.count(t.name))
        spdlog::warn("'{}': tensor '{}' is in shard '{}' but not in the index's weight_map; it is ignored",
                     index_path, t.name, f->path());
    }
  }
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, _] : where_) out.push_back(name);
  return out;
}

const File* Checkpoint::find_file(std::string_view name) const {
  auto it = where_.find(name);
  return it == where_.end() ? nullptr : it->second;
}

const File& Checkpoint::file_of(std::string_view name) const {
  if (const File* f = find_file(name)) return *f;
  fail("tensor '{}' is not in checkpoint '{}' ({} tensors): check the name with `iomm inspect {}`", name, source_,
       where_.size(), path_);
}

// ---------------------------------------------------------------------------------------------------------------------
// Writing

namespace {

// A file written to `path.tmp` and renamed over `path` only once complete and on disk, so a crash leaves either the
// old file or the new one, never a torn one.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0)
      fail("cannot create '{}': {}: check that the directory exists and is writable", tmp_, errno_text());
  }
  ~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, uint64_t n, std::string_view what) {
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {
      size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, uint64_t{1} << 30));
      ssize_t put = ::write(fd_, p, chunk);
      if (put < 0 && errno == EINTR) continue;
      if (put <= 0) fail("writing {} to '{}' failed: {} (disk full?)", what, tmp_, errno_text());
      p += put;
      n -= static_cast<uint64_t>(put);
    }
  }

  void commit() {
    if (::fsync(fd_) != 0) fail("fsync of '{}' failed: {}", tmp_, errno_text());
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) fail("closing '{}' failed: {}", tmp_, errno_text());
    if (::rename(tmp_.c_str(), path_.c_str()) != 0)
      fail("cannot rename '{}' to '{}': {}", tmp_, path_, errno_text());
    committed_ = true;
    // The rename itself must reach the disk too.
    std::string dir = fs::path(path_).parent_path().string();
    int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

void check_tensors(const std::string& path, const std::vector<TensorView>& tensors) {
  std::set<std::string_view> names;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__")
      fail("writing '{}': '__metadata__' is reserved by safetensors and cannot name a tensor", path);
    if (!names.insert(t.name).second) fail("writing '{}': tensor '{}' is given twice", path, t.name);
    auto numel = checked_numel(t.shape);
    uint64_t expected = 0;
    if (!numel || __builtin_mul_overflow(*numel, dtype_size(t.dtype), &expected))
      fail("writing '{}': tensor '{}': shape {} is negative or overflows", path, t.name, t.shape);
    if (expected != t.nbytes)
      fail("writing '{}': tensor '{}': shape {} of {} needs {} bytes but {} were given", path, t.name, t.shape,
           dtype_name(t.dtype), expected, t.nbytes);
    if (t.nbytes > 0 && !t.data) fail("writing '{}': tensor '{}' has no data", path, t.name);
  }
}

}  // namespace

namespace {

// The header text (padded so the data region starts 8-byte aligned) and the order the tensors' bytes follow in.
struct Layout {
  std::string header;
  std::vector<const TensorView*> order;
};

Layout layout_of(const std::string& path, const std::vector<TensorView>& tensors,
                 const std::map<std::string, std::string>& metadata) {
  check_tensors(path, tensors);
  Layout l;
  for (const auto& t : tensors) l.order.push_back(&t);
  std::sort(l.order.begin(), l.order.end(), [](const TensorView* a, const TensorView* b) {
    int ra = dtype_write_rank(a->dtype), rb = dtype_write_rank(b->dtype);
    return ra != rb ? ra > rb : a->name < b->name;
  });

  // Same key order as the Python library: __metadata__, then tensors in data order; dtype, shape, data_offsets.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto* t : l.order) {
    header[t->name] = {{"dtype", std::string(dtype_name(t->dtype))},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->nbytes}}};
    offset += t->nbytes;
  }
  try {
    l.header = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("writing '{}': a tensor name or metadata entry is not valid UTF-8 ({})", path, e.what());
  }
  l.header.append((8 - l.header.size() % 8) % 8, ' ');  // data region starts 8-byte aligned
  return l;
}

}  // namespace

void write(const std::string& path, const std::vector<TensorView>& tensors,
           const std::map<std::string, std::string>& metadata) {
  auto l = layout_of(path, tensors, metadata);
  AtomicFile out(path);
  uint64_t len = l.header.size();
  out.write(&len, 8, "the header length");
  out.write(l.header.data(), l.header.size(), "the header");
  for (const auto* t : l.order) out.write(t->data, t->nbytes, fmt::format("tensor '{}'", t->name));
  out.commit();
}

std::string serialize(const std::vector<TensorView>& tensors, const std::map<std::string, std::string>& metadata,
                      const std::string& what) {
  auto l = layout_of(what, tensors, metadata);
  uint64_t len = l.header.size();
  std::string out(reinterpret_cast<const char*>(&len), 8);
  out += l.header;
  for (const auto* t : l.order) out.append(static_cast<const char*>(t->data), t->nbytes);
  return out;
}

std::vector<std::string> write_sharded(const std::string& dir, const std::vector<TensorView>& tensors,
                                       const std::map<std::string, std::string>& metadata, uint64_t max_shard_bytes,
                                       const std::string& stem) {
  if (max_shard_bytes == 0) fail("writing '{}': the maximum shard size must be positive", dir);
  check_tensors(dir, tensors);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("cannot create directory '{}': {}", dir, ec.message());

  // huggingface_hub's split_state_dict_into_shards_factory, exactly (tensor order, oversized tensors alone).
  std::vector<std::vector<TensorView>> shards;
  std::vector<TensorView> current;
  uint64_t current_bytes = 0, total_bytes = 0;
  int64_t total_params = 0;
  for (const auto& t : tensors) {
    total_bytes += t.nbytes;
    total_params += t.numel();
    if (t.nbytes > max_shard_bytes) {
      shards.push_back({t});
      continue;
    }
    if (current_bytes + t.nbytes > max_shard_bytes) {
      shards.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(t);
    current_bytes += t.nbytes;
  }
  if (!current.empty() || shards.empty()) shards.push_back(std::move(current));

  const fs::path root(dir);
  const std::string single = stem + ".safetensors", index_name = stem + ".safetensors.index.json";
  std::vector<std::string> written;
  std::set<std::string> keep;
  if (shards.size() == 1) {
    write((root / single).string(), shards[0], metadata);
    written.push_back((root / single).string());
    keep.insert(single);
  } else {
    json weight_map = json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      std::string name = fmt::format("{}-{:05d}-of-{:05d}.safetensors", stem, i + 1, shards.size());
      write((root / name).string(), shards[i], metadata);
      written.push_back((root / name).string());
      keep.insert(name);
      for (const auto& t : shards[i]) weight_map[t.name] = name;
    }
    // transformers writes json.dumps(index, indent=2, sort_keys=True) + "\n"; nlohmann objects are key-sorted.
    json index = {{"metadata", {{"total_parameters", total_params}, {"total_size", total_bytes}}},
                  {"weight_map", weight_map}};
    std::string text = index.dump(2, ' ', /*ensure_ascii=*/true) + "\n";
    AtomicFile out((root / index_name).string());
    out.write(text.data(), text.size(), "the index");
    out.commit();
    written.push_back((root / index_name).string());
    keep.insert(index_name);
  }

  // Files of an earlier save under the same stem would otherwise shadow or contradict this one.
  const std::regex shard_re(std::regex_replace(stem, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") +
                            R"(-\d{5}-of-\d{5}\.safetensors)");
  for (const auto& e : fs::directory_iterator(root)) {
    std::string n = e.path().filename().string();
    bool ours = n == single || n == index_name || std::regex_match(n, shard_re);
    if (ours && !keep.count(n) && e.is_regular_file()) {
      spdlog::info("removing '{}' left by an earlier save", e.path().string());
      fs::remove(e.path(), ec);
    }
  }
  return written;
}

}  // namespace iomm::safetensors
