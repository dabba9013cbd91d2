// WebDataset tar shards: a reader that iterates samples over one or many shards, a deterministic writer, and
// an image-folder reader with the same Sample interface. Training reads real data through this too.
//
// The WebDataset rule: a member `dir/name.ext1.ext2` belongs to sample key `dir/name` (everything up to the
// first dot of the basename) with extension `ext1.ext2`; consecutive members with the same key form one
// sample. Samples without a recognised image member (jpg, jpeg, png, webp) are skipped and counted.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

struct archive;  // libarchive

namespace iomm {
struct Error;
}

namespace iomm::data {

struct Sample {
  std::string key;    // e.g. "000000042" or "part1/000042"
  std::string shard;  // the tar (or folder) it came from, for error messages
  std::map<std::string, std::vector<uint8_t>> members;  // lower-case extension -> bytes

  // The first image member (by extension order jpg, jpeg, png, webp), or nullptr.
  const std::vector<uint8_t>* image() const;
  std::string image_ext() const;  // "" when there is none
  // Caption: the `.txt` member, else `.json`'s "prompt", "caption" or "text" field; nullopt when none.
  std::optional<std::string> caption() const;
  std::optional<std::string> text(const std::string& ext) const;
};

bool is_image_ext(const std::string& ext);
// Splits a member path by the WebDataset rule; false for names without an extension or hidden names.
bool split_key(const std::string& member, std::string& key, std::string& ext);

struct ReadStats {
  int64_t shards = 0, members = 0, samples = 0;
  int64_t skipped_samples = 0;  // no image member (or no required member)
  int64_t skipped_members = 0;  // no extension, hidden, a repeated extension (tolerant mode), not a regular file
  int64_t damaged_shards = 0;   // tolerant mode: truncated or corrupt tars, read up to the damage
  // The first example of each cause, "shard: key" or "shard: message"; empty when the count is 0.
  std::string first_skipped_sample, first_skipped_member, first_damaged_shard;
  std::string summary() const;
};

// Expands a shard spec: a .tar file, a directory (its *.tar, sorted), or a brace range
// "dir/shard-{000000..000009}.tar". Fails naming any missing file.
std::vector<std::string> expand_shards(const std::string& spec);

class WebDatasetReader {
 public:
  // `required_member`: the extension a sample must have (e.g. "features.safetensors"); empty = an image member.
  // `tolerate_damage`: a truncated or corrupt shard ends at the damage (counted in damaged_shards; a sample whose
  // members were all read before it is kept, the sample the damage is in is dropped) and reading goes on with the
  // next shard; otherwise it fails naming the shard. A shard that
  // cannot be opened at all fails either way.
  explicit WebDatasetReader(std::vector<std::string> shards, std::string required_member = "",
                            bool tolerate_damage = false);
  ~WebDatasetReader();
  WebDatasetReader(const WebDatasetReader&) = delete;
  WebDatasetReader& operator=(const WebDatasetReader&) = delete;
  // Fills `out` with the next sample that has an image (or the required member); false after the last shard.
  bool next(Sample& out);
  const ReadStats& stats() const { return stats_; }

 private:
  struct Tar;
  bool open_next_shard();
  bool read_member(std::string& name, std::vector<uint8_t>& bytes);
  bool read_sample(Sample& out);  // the next sample of the open shard (maybe without an image); false at its end
  void count_damage(const Error& e);

  std::vector<std::string> shards_;
  std::string required_member_;
  bool tolerate_damage_ = false;
  size_t next_shard_ = 0;
  std::unique_ptr<Tar> tar_;
  std::optional<std::pair<std::string, std::vector<uint8_t>>> pending_;  // first member of the next sample
  ReadStats stats_;
};

// Writes one ustar shard atomically (PATH.tmp renamed over PATH on close()). Members get fixed metadata (mtime 0,
// uid/gid 0, mode 0644), so the same members in the same order give the same bytes.
class TarWriter {
 public:
  explicit TarWriter(std::string path);
  ~TarWriter();  // without close(): the temporary file is removed, the target untouched
  TarWriter(const TarWriter&) = delete;
  TarWriter& operator=(const TarWriter&) = delete;
  void add(const std::string& name, const void* data, size_t size);
  void close();

 private:
  std::string path_, tmp_;
  ::archive* a_ = nullptr;
};

// Samples into numbered shards DIR/shard-000000.tar, ... with at most `shard_size` samples each.
class WebDatasetWriter {
 public:
  WebDatasetWriter(std::string dir, int64_t shard_size, std::string prefix = "shard-");
  ~WebDatasetWriter();
  // members: (extension, bytes); returns the shard's file name the sample went to.
  std::string write(const std::string& key, const std::vector<std::pair<std::string, std::string>>& members);
  void close();
  const std::vector<std::string>& shards() const { return shards_; }

 private:
  std::string dir_, prefix_;
  int64_t shard_size_, in_shard_ = 0;
  std::unique_ptr<TarWriter> tar_;
  std::vector<std::string> shards_;
};

// A folder of images (recursive, sorted by path), each with an optional same-stem .txt caption.
class ImageFolderReader {
 public:
  explicit ImageFolderReader(const std::string& dir);
  bool next(Sample& out);
  size_t size() const { return files_.size(); }
  const std::vector<std::string>& files() const { return files_; }
  void seek(size_t pos) { pos_ = pos < files_.size() ? pos : files_.size(); }  // next() continues at file `pos`

 private:
  std::string dir_;
  std::vector<std::string> files_;
  size_t pos_ = 0;
};

}  // namespace iomm::data
