// The safetensors format (https://github.com/huggingface/safetensors), torch-free.
//
// File = u64 little-endian header length N, N bytes of JSON header, then the data region. The header maps each tensor
// name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data region) and may hold
// "__metadata__" (string -> string). Validation follows the Python library: the tensors, sorted by offsets, must tile
// the data region exactly (no overlap, no gap, nothing left over), and each byte size must be prod(shape) * itemsize.
//
// Reading maps the file (default) or preads the bytes (ReadMode::Pread; faster on network filesystems, where page
// faults on a mapping are slow). A Checkpoint opens a file, a model directory, or a sharded checkpoint
// (`*.safetensors.index.json`) and looks tensors up by name across shards.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace iomm::safetensors {

// The element types iomm reads and writes (a subset of the format's; FP8 / unsigned 16-64 bit are refused).
enum class DType { BOOL, U8, I8, I16, F16, BF16, I32, F32, F64, I64 };

std::string_view dtype_name(DType d);                      // "BF16"
std::optional<DType> parse_dtype(std::string_view name);  // nullopt when not one of the names above
size_t dtype_size(DType d);                                // bytes per element (BOOL: 1)
// The order the Python library writes tensors in: larger rank first (I64 > F64 > F32 > I32 > BF16 > F16 > I16 > I8 >
// U8 > BOOL), ties by name. Keeps every tensor aligned to its element size.
int dtype_write_rank(DType d);

// One tensor's header entry. Offsets are relative to the start of the data region.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;

  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// A tensor's bytes in memory (row-major, little-endian). Input of the writers; output of File::view.
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  uint64_t nbytes = 0;

  int64_t numel() const;
};

enum class ReadMode { Mmap, Pread };

// The Python library's bound on the header size; larger is treated as corruption.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// One .safetensors file, validated on open.
class File {
 public:
  explicit File(std::string path, ReadMode mode = ReadMode::Mmap);
  // A safetensors image held in memory (e.g. a WebDataset tar member); `name` stands in for the path in errors.
  static std::unique_ptr<File> from_bytes(std::string name, std::string bytes);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  ReadMode mode() const { return mode_; }
  // In data-region order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t file_size() const { return file_size_; }

  const TensorInfo* find(std::string_view name) const;
  // Fails (naming the file and the tensor) when `name` is absent.
  const TensorInfo& info(std::string_view name) const;
  // Mmap: points into the mapping. Pread: reads the bytes once and keeps them for the File's lifetime.
  TensorView view(std::string_view name) const;
  // Copies the tensor's bytes into `dst` (exactly info(name).nbytes() bytes); with Pread, straight from the file.
  void read_into(std::string_view name, void* dst, uint64_t dst_bytes) const;

 private:
  File() = default;
  void check_header_length(uint64_t header_len);  // sets data_start_
  void parse_header(const std::string& header);
  void validate_layout();
  void pread_exact(void* dst, uint64_t n, uint64_t offset, std::string_view what) const;

  std::string path_;
  ReadMode mode_;
  int fd_ = -1;
  uint64_t file_size_ = 0;
  uint64_t data_start_ = 0;  // 8 + header length
  const std::byte* map_ = nullptr;
  std::string owned_;  // from_bytes: the bytes map_ points into
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string_view, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::unique_ptr<std::byte[]>> pread_cache_;
};

// A model's weights: one file, a directory, or a sharded checkpoint. Names are unique across shards.
class Checkpoint {
 public:
  // `path`: a .safetensors file; a `*.safetensors.index.json`; or a directory holding `model.safetensors`,
  // `model.safetensors.index.json`, or exactly one `*.safetensors.index.json` / `*.safetensors`.
  explicit Checkpoint(const std::string& path, ReadMode mode = ReadMode::Mmap);

  const std::string& path() const { return path_; }
  // The file that was opened: the .safetensors file or the index.json.
  const std::string& source() const { return source_; }
  const std::vector<std::unique_ptr<File>>& files() const { return files_; }
  // Sorted by name.
  std::vector<std::string> names() const;
  size_t size() const { return where_.size(); }
  bool contains(std::string_view name) const { return find_file(name) != nullptr; }
  // Union of the shards' __metadata__ (the first shard listing a key wins).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  const File& file_of(std::string_view name) const;
  const TensorInfo& info(std::string_view name) const { return file_of(name).info(name); }
  TensorView view(std::string_view name) const { return file_of(name).view(name); }
  void read_into(std::string_view name, void* dst, uint64_t dst_bytes) const {
    file_of(name).read_into(name, dst, dst_bytes);
  }

 private:
  const File* find_file(std::string_view name) const;
  void open_index(const std::string& index_path, ReadMode mode);

  std::string path_, source_;
  std::vector<std::unique_ptr<File>> files_;
  std::map<std::string, const File*, std::less<>> where_;
  std::map<std::string, std::string> metadata_;
};

// Writes one file atomically (to `path.tmp`, fsync, rename). Tensors are laid out in the Python library's order
// (dtype_write_rank, then name); the header is padded with spaces so the data region starts 8-byte aligned.
void write(const std::string& path, const std::vector<TensorView>& tensors,
           const std::map<std::string, std::string>& metadata = {});

// The bytes write() would put in a file (for in-memory use, e.g. a tar member); `what` names it in errors.
std::string serialize(const std::vector<TensorView>& tensors, const std::map<std::string, std::string>& metadata = {},
                      const std::string& what = "<memory>");

// Hugging Face's sharded layout in `dir`: tensors in the given order, a new shard whenever the next tensor would take
// the current one past `max_shard_bytes` (a larger tensor gets a shard of its own), files
// `{stem}-0000i-of-0000n.safetensors` plus `{stem}.safetensors.index.json` (metadata.total_size, total_parameters,
// weight_map). A single shard is written as `{stem}.safetensors` without an index. Stale files of an earlier save with
// the same stem are removed. Returns the paths written (shards, then the index).
std::vector<std::string> write_sharded(const std::string& dir, const std::vector<TensorView>& tensors,
                                       const std::map<std::string, std::string>& metadata, uint64_t max_shard_bytes,
                                       const std::string& stem = "model");

}  // namespace iomm::safetensors
