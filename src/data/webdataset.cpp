#include "data/webdataset.h"

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace fs = std::filesystem;

namespace iomm::data {

namespace {
constexpr const char* kImageExts[] = {"jpg", "jpeg", "png", "webp"};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

bool ends_with_end_of_archive(const std::string& path, int64_t size) {
  if (size < 1024) return false;
  std::ifstream in(path, std::ios::binary);
  in.seekg(size - 1024);
  char tail[1024];
  if (!in.read(tail, sizeof tail)) return false;
  return std::all_of(std::begin(tail), std::end(tail), [](char c) { return c == 0; });
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read '{}'", path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
}  // namespace

// ---- Sample ----

bool is_image_ext(const std::string& ext) {
  return std::find(std::begin(kImageExts), std::end(kImageExts), lower(ext)) != std::end(kImageExts);
}

bool split_key(const std::string& member, std::string& key, std::string& ext) {
  const size_t slash = member.rfind('/');
  const size_t base = slash == std::string::npos ? 0 : slash + 1;
  if (base >= member.size() || member[base] == '.' || member.compare(base, 2, "__") == 0) return false;
  const size_t dot = member.find('.', base);
  if (dot == std::string::npos || dot + 1 >= member.size()) return false;
  key = member.substr(0, dot);
  ext = lower(member.substr(dot + 1));
  return true;
}

const std::vector<uint8_t>* Sample::image() const {
  for (const char* e : kImageExts)
    if (auto it = members.find(e); it != members.end()) return &it->second;
  return nullptr;
}

std::string Sample::image_ext() const {
  for (const char* e : kImageExts)
    if (members.count(e)) return e;
  return "";
}

std::optional<std::string> Sample::text(const std::string& ext) const {
  auto it = members.find(ext);
  if (it == members.end()) return std::nullopt;
  return std::string(it->second.begin(), it->second.end());
}

std::optional<std::string> Sample::caption() const {
  if (auto t = text("txt")) return t;
  if (auto j = text("json")) {
    nlohmann::json doc = nlohmann::json::parse(*j, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) fail("{}: member '{}.json' is not valid JSON", shard, key);
    for (const char* f : {"prompt", "caption", "text"})
      if (doc.is_object() && doc.contains(f) && doc[f].is_string()) return doc[f].get<std::string>();
  }
  return std::nullopt;
}

std::string ReadStats::summary() const {
  auto s = fmt::format("{} samples from {} shards ({} members); skipped {} samples without an image, {} members "
                       "without a usable name",
                       samples, shards, members, skipped_samples, skipped_members);
  if (damaged_shards) s += fmt::format(", {} damaged shards read up to the damage", damaged_shards);
  return s;
}

namespace {

// libarchive leaves the message NULL for some failures (a GNU long-name entry that ends early); fmt throws on a
// null char pointer, which turned a damaged shard into an error other than iomm::Error that no tolerant reader caught.
const char* archive_message(::archive* a) {
  const char* m = archive_error_string(a);
  return m ? m : "libarchive gave no message (the tar headers are damaged)";
}

}  // namespace

// ---- shard specs ----

std::vector<std::string> expand_shards(const std::string& spec) {
  std::vector<std::string> out;
  static const std::regex brace(R"(^(.*)\{(\d+)\.\.(\d+)\}(.*)$)");
  std::smatch m;
  if (std::regex_match(spec, m, brace)) {
    const std::string lo = m[2], hi = m[3];
    const long a = std::stol(lo), b = std::stol(hi);
    if (b < a) fail("shard range '{}' is empty: the upper bound must be >= the lower", spec);
    for (long i = a; i <= b; ++i) out.push_back(fmt::format("{}{:0{}d}{}", m[1].str(), i, lo.size(), m[4].str()));
  } else if (fs::is_directory(spec)) {
    for (const auto& e : fs::directory_iterator(spec))
      if (e.is_regular_file() && e.path().extension() == ".tar") out.push_back(e.path().string());
    std::sort(out.begin(), out.end());
    if (out.empty()) fail("no .tar shards in directory '{}'", spec);
  } else {
    out.push_back(spec);
  }
  for (const auto& p : out)
    if (!fs::is_regular_file(p)) fail("shard '{}' does not exist (from spec '{}')", p, spec);
  return out;
}

// ---- reader ----

struct WebDatasetReader::Tar {
  ::archive* a = nullptr;
  std::string path;
  la_int64_t file_size = 0;
  bool at_end = false;  // the last member was read (a final sample may still be returned)
  ~Tar() {
    if (a) archive_read_free(a);
  }
};

WebDatasetReader::WebDatasetReader(std::vector<std::string> shards, std::string required_member,
                                   bool tolerate_damage)
    : shards_(std::move(shards)), required_member_(std::move(required_member)), tolerate_damage_(tolerate_damage) {}
WebDatasetReader::~WebDatasetReader() = default;

bool WebDatasetReader::open_next_shard() {
  tar_.reset();
  if (next_shard_ >= shards_.size()) return false;
  auto t = std::make_unique<Tar>();
  t->path = shards_[next_shard_++];
  t->a = archive_read_new();
  archive_read_support_format_tar(t->a);
  archive_read_support_format_gnutar(t->a);
  if (archive_read_open_filename(t->a, t->path.c_str(), 1 << 16) != ARCHIVE_OK)
    fail("cannot open shard '{}': {}; check the path and its permissions, or remove it from the shard list",
         t->path, archive_message(t->a));
  std::error_code ec;
  t->file_size = la_int64_t(fs::file_size(t->path, ec));
  tar_ = std::move(t);
  ++stats_.shards;
  return true;
}

// Next regular-file member of the current shard; false at its end.
bool WebDatasetReader::read_member(std::string& name, std::vector<uint8_t>& bytes) {
  struct archive_entry* e;
  for (;;) {
    name.clear();  // on a failure, empty: the header itself was unreadable
    const int r = archive_read_next_header(tar_->a, &e);
    if (r == ARCHIVE_EOF) {
      // libarchive ends quietly when a file stops exactly between members; a tar always ends with two zero
      // blocks, so their absence means the writer was cut off (and the last sample may be incomplete).
      if (!ends_with_end_of_archive(tar_->path, tar_->file_size))
        fail("shard '{}' ends after {} members without the tar end-of-archive blocks: it is truncated", tar_->path,
             stats_.members);
      return false;
    }
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
      fail("shard '{}': corrupt tar after {} members: {}", tar_->path, stats_.members, archive_message(tar_->a));
    name = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
    if (archive_entry_filetype(e) != AE_IFREG) continue;
    ++stats_.members;
    const la_int64_t size = archive_entry_size(e);
    // A corrupt header can claim any size: refuse one larger than the file before allocating it.
    if (size > tar_->file_size)
      fail("shard '{}', member '{}': its header claims {} bytes, more than the whole file ({})", tar_->path, name,
           size, tar_->file_size);
    bytes.resize(size_t(std::max<la_int64_t>(size, 0)));
    size_t got = 0;
    while (got < bytes.size()) {
      const la_ssize_t n = archive_read_data(tar_->a, bytes.data() + got, bytes.size() - got);
      if (n < 0) fail("shard '{}', member '{}': {}", tar_->path, name, archive_message(tar_->a));
      if (n == 0) fail("shard '{}', member '{}': truncated ({} of {} bytes)", tar_->path, name, got, bytes.size());
      got += size_t(n);
    }
    return true;
  }
}

void WebDatasetReader::count_damage(const Error& e) {
  if (stats_.damaged_shards++ == 0) stats_.first_damaged_shard = e.what();
}

bool WebDatasetReader::read_sample(Sample& out) {
  if (tar_->at_end) return false;
  out = Sample{};
  out.shard = tar_->path;
  std::string name, key, ext;
  std::vector<uint8_t> bytes;
  if (pending_) {
    split_key(pending_->first, out.key, ext);
    out.members[ext] = std::move(pending_->second);
    pending_.reset();
  }
  for (;;) {
    try {
      if (!read_member(name, bytes)) break;
    } catch (const Error& e) {
      // Damage in the data of the next sample's first member leaves this sample whole (that member's header,
      // read, names another key): it is handed out and the shard ends. Damage inside this sample, or in a header
      // (which may have been one more member of this sample), drops it: a partial sample is never handed out.
      std::string damaged_key, damaged_ext;
      const bool next_sample = !name.empty() && split_key(name, damaged_key, damaged_ext) && damaged_key != out.key;
      if (!tolerate_damage_ || out.members.empty() || !next_sample) throw;
      count_damage(e);
      tar_->at_end = true;
      return true;
    }
    if (!split_key(name, key, ext)) {
      if (stats_.skipped_members++ == 0) stats_.first_skipped_member = tar_->path + ": " + name;
      continue;
    }
    if (out.members.empty()) out.key = key;
    if (key != out.key) {  // first member of the next sample
      pending_.emplace(name, std::move(bytes));
      return true;
    }
    if (out.members.count(ext)) {
      if (!tolerate_damage_)
        fail("shard '{}': member '{}' repeats extension '{}' of sample '{}' (each key needs unique extensions)",
             tar_->path, name, ext, key);
      if (stats_.skipped_members++ == 0) stats_.first_skipped_member = tar_->path + ": " + name + " (repeated)";
      continue;
    }
    out.members[ext] = std::move(bytes);
  }
  tar_->at_end = true;
  return !out.members.empty();
}

bool WebDatasetReader::next(Sample& out) {
  for (;;) {
    if (!tar_ && !open_next_shard()) return false;
    bool got = false;
    try {
      got = read_sample(out);
    } catch (const Error& e) {
      if (!tolerate_damage_) throw;
      count_damage(e);
      pending_.reset();  // the partial sample is dropped with the rest of the shard
    }
    if (!got) {
      tar_.reset();
      continue;
    }
    if (required_member_.empty() ? !out.image() : !out.members.count(required_member_)) {
      if (stats_.skipped_samples++ == 0) stats_.first_skipped_sample = out.shard + ": " + out.key;
      continue;
    }
    ++stats_.samples;
    return true;
  }
}

// ---- writer ----

TarWriter::TarWriter(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
  const auto parent = fs::path(path_).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  a_ = archive_write_new();
  archive_write_set_format_ustar(a_);
  archive_write_set_bytes_in_last_block(a_, 1);  // no padding of the last block beyond the tar format's own
  if (archive_write_open_filename(a_, tmp_.c_str()) != ARCHIVE_OK)
    fail("cannot create shard '{}': {}", tmp_, archive_message(a_));
}

TarWriter::~TarWriter() {
  if (a_) {
    archive_write_free(a_);
    std::error_code ec;
    fs::remove(tmp_, ec);
  }
}

void TarWriter::add(const std::string& name, const void* data, size_t size) {
  struct archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, name.c_str());
  archive_entry_set_size(e, la_int64_t(size));
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_perm(e, 0644);
  archive_entry_set_mtime(e, 0, 0);
  archive_entry_set_uid(e, 0);
  archive_entry_set_gid(e, 0);
  const bool ok = archive_write_header(a_, e) == ARCHIVE_OK &&
                  archive_write_data(a_, data, size) == la_ssize_t(size);
  archive_entry_free(e);
  if (!ok) fail("shard '{}': cannot write member '{}': {}", path_, name, archive_message(a_));
}

void TarWriter::close() {
  if (!a_) return;
  const bool ok = archive_write_close(a_) == ARCHIVE_OK;
  std::string err = ok ? "" : archive_message(a_);
  archive_write_free(a_);
  a_ = nullptr;
  if (!ok) {
    std::error_code ec;
    fs::remove(tmp_, ec);
    fail("shard '{}': cannot finish the tar: {}", path_, err);
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    std::error_code ec;
    fs::remove(tmp_, ec);
    fail("shard '{}': cannot rename the finished '{}' over it: {}", path_, tmp_, std::strerror(err));
  }
}

WebDatasetWriter::WebDatasetWriter(std::string dir, int64_t shard_size, std::string prefix)
    : dir_(std::move(dir)), prefix_(std::move(prefix)), shard_size_(shard_size) {
  if (shard_size_ < 1) fail("shard size must be >= 1, got {}", shard_size_);
  fs::create_directories(dir_);
}
WebDatasetWriter::~WebDatasetWriter() = default;

std::string WebDatasetWriter::write(const std::string& key,
                                    const std::vector<std::pair<std::string, std::string>>& members) {
  if (key.find('.') != std::string::npos) fail("WebDataset key '{}' must not contain a dot", key);
  if (!tar_ || in_shard_ >= shard_size_) {
    if (tar_) tar_->close();
    shards_.push_back(fmt::format("{}{:06d}.tar", prefix_, shards_.size()));
    tar_ = std::make_unique<TarWriter>((fs::path(dir_) / shards_.back()).string());
    in_shard_ = 0;
  }
  for (const auto& [ext, bytes] : members) tar_->add(key + "." + ext, bytes.data(), bytes.size());
  ++in_shard_;
  return shards_.back();
}

void WebDatasetWriter::close() {
  if (tar_) tar_->close();
  tar_.reset();
}

// ---- image folder ----

ImageFolderReader::ImageFolderReader(const std::string& dir) : dir_(dir) {
  if (!fs::is_directory(dir)) fail("image folder '{}' does not exist or is not a directory", dir);
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string ext = e.path().extension().string();
    if (e.is_regular_file() && ext.size() > 1 && is_image_ext(ext.substr(1))) files_.push_back(e.path().string());
  }
  std::sort(files_.begin(), files_.end());
}

bool ImageFolderReader::next(Sample& out) {
  if (pos_ >= files_.size()) return false;
  const fs::path p = files_[pos_++];
  out = Sample{};
  out.shard = dir_;
  out.key = fs::relative(p, dir_).replace_extension().string();
  out.members[lower(p.extension().string().substr(1))] = read_bytes(p.string());
  fs::path txt = p;
  txt.replace_extension(".txt");
  if (fs::is_regular_file(txt)) out.members["txt"] = read_bytes(txt.string());
  return true;
}

}  // namespace iomm::data
