#include "model/model_fingerprint.h"

#include <openssl/evp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <vector>

#include "core/config.h"
#include "core/error.h"
#include "model/mllm_identity.h"
#include "model/model_dir.h"

namespace iomm {

namespace fs = std::filesystem;

namespace {

struct Sha256 {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
  Sha256() {
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) fail("sha256: OpenSSL cannot start a digest");
  }
  void update(const void* data, size_t n) { EVP_DigestUpdate(ctx.get(), data, n); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx.get(), md, &len);
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < len; ++i) {
      out += digits[md[i] >> 4];
      out += digits[md[i] & 15];
    }
    return out;
  }
};

bool is_weight_or_config(const fs::path& p) {
  auto ext = p.extension().string();
  auto name = p.filename().string();
  // mllm.json (model/mllm_identity.h) names the MLLM's absolute path; its files are counted below instead, so
  // that a moved run keeps its fingerprint.
  if (name == kMllmRecord) return false;
  return ext == ".safetensors" || ext == ".json" || name == "iomm.toml" || name == "merges.txt";
}

// name -> path of every file that decides the output (see the header).
std::map<std::string, std::string> fingerprint_files(const std::string& model_dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(model_dir))
    if (e.is_regular_file() && is_weight_or_config(e.path()))
      files[fs::relative(e.path(), model_dir).generic_string()] = e.path().string();
  Config cfg = load_model_toml(model_dir);
  std::string mllm = cfg.get_string("model.mllm", "");
  if (!mllm.empty() && fs::is_directory(mllm))
    for (const auto& e : fs::directory_iterator(mllm))
      if (e.is_regular_file() && is_weight_or_config(e.path()))
        files["mllm/" + e.path().filename().string()] = e.path().string();
  std::string ae = cfg.get_string("model.autoencoder", "identity");
  if (ae != "identity" && ae != "pixel" && fs::is_regular_file(ae))
    files["autoencoder/" + fs::path(ae).filename().string()] = ae;
  return files;
}

}  // namespace

std::string sha256_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("{}: cannot open for hashing (missing file or no read permission)", path);
  Sha256 h;
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), std::streamsize(buf.size()));
    h.update(buf.data(), size_t(f.gcount()));
  }
  if (f.bad()) fail("{}: read error while hashing", path);
  return h.hex();
}

std::string sha256_hex(const std::string& bytes) {
  Sha256 h;
  h.update(bytes.data(), bytes.size());
  return h.hex();
}

std::string model_fingerprint(const std::string& model_dir) {
  std::string manifest;
  for (const auto& [name, path] : fingerprint_files(model_dir)) manifest += sha256_file(path) + "  " + name + "\n";
  return "sha256:" + sha256_hex(manifest);
}

}  // namespace iomm
