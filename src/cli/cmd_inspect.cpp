// `iomm inspect PATH`: the tensors (name, dtype, shape; sorted by name), the metadata and the parameter count of a
// safetensors file, model directory or sharded checkpoint. `--json` prints the same as one JSON object.
//
// Hidden options (not in --help; used by the conformance tests and handy for converting checkpoints):
//   --save-copy OUT         reads every tensor through tensor_io (libtorch) and writes them, with the metadata, to OUT
//   --max-shard-bytes N     with --save-copy: write OUT as a Hugging Face sharded directory (shards of at most N bytes)
//   --pread                 read with pread instead of mmap
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "core/error.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "core/tensor_io.h"

namespace {

namespace st = iomm::safetensors;

struct InspectOptions {
  std::string path;
  bool json = false;
  std::string save_copy;
  uint64_t max_shard_bytes = 0;
  bool pread = false;
  // A later `--config FILE` mode (checkpoint vs. model config) adds its option here and its check in run_inspect.
};

// 1570000000 -> "1.57B": the scale people read parameter counts in.
std::string human_count(uint64_t n) {
  const char* units[] = {"", "K", "M", "B", "T"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1000 && u < 4) {
    v /= 1000;
    ++u;
  }
  return u == 0 ? std::to_string(n) : fmt::format("{:.2f}{}", v, units[u]);
}

void print_text(const st::Checkpoint& ckpt) {
  auto names = ckpt.names();
  size_t width = 0;
  for (const auto& n : names) width = std::max(width, n.size());
  uint64_t params = 0, bytes = 0;
  fmt::print("{} ({} file{})\n", ckpt.source(), ckpt.files().size(), ckpt.files().size() == 1 ? "" : "s");
  for (const auto& n : names) {
    const auto& t = ckpt.info(n);
    params += static_cast<uint64_t>(t.numel());
    bytes += t.nbytes();
    fmt::print("  {:<{}}  {:<4}  [{}]\n", n, width, st::dtype_name(t.dtype), fmt::join(t.shape, ", "));
  }
  if (!ckpt.metadata().empty()) {
    fmt::print("metadata:\n");
    for (const auto& [k, v] : ckpt.metadata()) fmt::print("  {}: {}\n", k, v);
  }
  std::string human = params >= 1000 ? fmt::format(" ({})", human_count(params)) : "";
  fmt::print("total: {} tensors, {} parameters{}, {} bytes\n", names.size(), params, human, bytes);
}

void print_json(const st::Checkpoint& ckpt) {
  nlohmann::ordered_json tensors = nlohmann::ordered_json::array();
  uint64_t params = 0, bytes = 0;
  for (const auto& n : ckpt.names()) {
    const auto& t = ckpt.info(n);
    params += static_cast<uint64_t>(t.numel());
    bytes += t.nbytes();
    tensors.push_back({{"name", n},
                       {"dtype", std::string(st::dtype_name(t.dtype))},
                       {"shape", t.shape},
                       {"nbytes", t.nbytes()},
                       {"file", ckpt.file_of(n).path()}});
  }
  nlohmann::ordered_json files = nlohmann::ordered_json::array();
  for (const auto& f : ckpt.files()) files.push_back(f->path());
  nlohmann::ordered_json out = {{"path", ckpt.path()},     {"source", ckpt.source()},     {"files", files},
                                {"metadata", ckpt.metadata()}, {"num_tensors", tensors.size()},
                                {"total_parameters", params}, {"total_bytes", bytes},  {"tensors", tensors}};
  fmt::print("{}\n", out.dump(2));
}

void save_copy(const InspectOptions& o, const st::Checkpoint& ckpt) {
  auto tensors = iomm::load_tensors(ckpt);
  if (o.max_shard_bytes > 0) {
    iomm::save_tensors_sharded(o.save_copy, tensors, ckpt.metadata(), o.max_shard_bytes);
  } else {
    iomm::save_tensors(o.save_copy, tensors, ckpt.metadata());
  }
  spdlog::info("copied {} tensors to {}", tensors.size(), o.save_copy);
}

int run_inspect(const InspectOptions& o) {
  if (o.max_shard_bytes > 0 && o.save_copy.empty()) iomm::fail("--max-shard-bytes needs --save-copy OUT");
  st::Checkpoint ckpt(o.path, o.pread ? st::ReadMode::Pread : st::ReadMode::Mmap);
  if (o.json)
    print_json(ckpt);
  else
    print_text(ckpt);
  if (!o.save_copy.empty()) save_copy(o, ckpt);
  return 0;
}

iomm::cli::Register reg{{"inspect", "List the tensors, metadata and parameter count of a safetensors checkpoint",
  [](CLI::App& app) {
    auto o = std::make_shared<InspectOptions>();
    app.add_option("path", o->path, "a .safetensors file, a *.safetensors.index.json, or a model directory")
        ->required();
    app.add_flag("--json", o->json, "print one JSON object instead of a table");
    app.add_option("--save-copy", o->save_copy, "write every tensor (read through libtorch) to this path")
        ->group("");
    app.add_option("--max-shard-bytes", o->max_shard_bytes, "with --save-copy: a sharded directory")->group("");
    app.add_flag("--pread", o->pread, "read with pread instead of mmap")->group("");
    return [o] { return run_inspect(*o); };
  }}};

}  // namespace
