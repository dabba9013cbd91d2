// Where training images come from, as a list of units that ranks, epochs and the shuffle work on: a unit is one
// WebDataset shard, or a group of image files (an image folder or a JSONL index of files). A unit is read whole,
// in order, by one reader; its damage is counted, never fatal, except a unit that cannot be opened at all.
//
// Specs (`data.images`, `data.pairs`, `iomm data scan --data`):
//   shards/                          a directory of .tar shards (sorted by name)
//   shards/shard-{000000..000999}.tar  a brace range
//   shard.tar                        one shard
//   shards.txt                       a text file listing shard paths, one per line (relative to the file; # comments)
//   images/                          a directory of images (recursive, sorted), captions in same-stem .txt files
//   index.jsonl                      one JSON object per line: {"image": path, "caption": text} (caption optional,
//                                    also "text" / "prompt"), or {"shard": path, ...} (iomm world's index: the
//                                    distinct shards, in order of first appearance); paths relative to the file
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "data/webdataset.h"

namespace iomm::data {

struct ImageFile {
  std::string path, key;
  std::optional<std::string> caption;  // from the index; folders read a same-stem .txt when the unit is read
};

struct DataUnit {
  std::string shard;              // a .tar, or empty for a group of files
  std::vector<ImageFile> files;
  std::string name() const;       // the shard, or "<first file> (+N files)"
};

struct SampleSkip {
  std::string cause, example;  // e.g. "undecodable", "a.tar: 0042: not a PNG, JPEG or WebP image ..."
};

// Why samples were skipped. Each cause is counted, and its first example named by shard and key.
struct SkipCounts {
  std::map<std::string, int64_t> count;
  std::map<std::string, std::string> first;
  void add(const std::string& cause, const std::string& example, int64_t n = 1);
  void merge(const SkipCounts& other);
  int64_t total() const;
  std::string summary() const;  // "3 undecodable (first: a.tar: 0042: ...), 1 no_caption (...)" or "none"
};

// Causes counted while reading units (before the shuffle):
//   no_image         a sample without a jpg/jpeg/png/webp member
//   no_features      a feature cache's sample without its features.safetensors member
//   bad_member       a member without a usable name (no extension, hidden) or repeating its sample's extension
//   damaged_shard    a truncated or corrupt tar, read up to the damage
//   missing_file     an image file named by an index that does not exist
// and by the decoder (data/sample_stream.h): undecodable, no_caption, bad_caption.

struct DataSource {
  std::string spec;
  std::vector<DataUnit> units;
  int64_t files_per_unit = 1000;
  // The member a shard's sample must have: empty = an image (jpg, jpeg, png, webp; else skipped as no_image); a
  // feature cache's source (data/feature_cache.h) sets "features.safetensors" (else skipped as no_features).
  std::string required_member;

  // Resolves `spec` (forms above). Fails naming the spec and the fix when it matches nothing; does not open shards.
  static DataSource open(const std::string& spec, int64_t files_per_unit = 1000);
};

// The samples an index lists for the units of `src`: the spec itself when it is a .jsonl, else the index.jsonl
// beside the shards (iomm world writes one line {"shard", "key"} per sample). nullopt when there is none.
struct IndexedCount {
  std::string index;
  int64_t samples = 0;
};
std::optional<IndexedCount> indexed_samples(const DataSource& src);
// Compares a whole read of `src` (`loaded` usable samples, `skips` by cause) with its index: "" when every sample
// the index lists was loaded or skipped with a cause, else a warning with the index, both counts and the difference
// (samples lost without a cause of their own: a tar cut at a member boundary, members swallowed by a damaged size
// field, a shard replaced by a shorter copy). Not fatal: damage is counted, this makes sure it is noticed.
std::string check_against_index(const DataSource& src, int64_t loaded, const SkipCounts& skips);

// Reads one unit in order, calling `emit` for every sample with an image member (or `required_member`); skips are
// added to `skips`. A shard that cannot be opened fails (naming it); damage inside one is counted and ends that shard.
void read_unit(const DataUnit& unit, SkipCounts& skips, const std::function<void(Sample&&)>& emit,
               const std::string& required_member = "");

}  // namespace iomm::data
