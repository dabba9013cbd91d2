// `iomm inspect PATH`: the tensors (name, dtype, shape; sorted by name), the metadata and the parameter count of a
// safetensors file, model directory or sharded checkpoint. `--json` prints the same as one JSON object.
//
// Hidden options (not in --help; used by the conformance tests and handy for converting checkpoints):
//   --save-copy OUT         reads every tensor through tensor_io (libtorch) and writes them, with the metadata, to OUT
//   --max-shard-bytes N     with --save-copy: write OUT as a Hugging Face sharded directory (shards of at most N bytes)
//   --pread                 read with pread instead of mmap
//
// `--config FILE` (a model config with a [generator] table, e.g. configs/model/iomm-b.toml): prints the generator's
// parameter count from the config alone (built on the meta device), and with PATH checks that the checkpoint
// (diffusers or BFL names) has exactly the tensors and shapes that config needs; exits non-zero with the lists of
// missing, unexpected and mis-shaped tensors otherwise. No tensor data is read.
#include <set>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "cli/command.h"
#include "core/config.h"
#include "model/generator.h"
#include "train/memory_estimate.h"
#include "core/error.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "core/tensor_io.h"
#include "models/mmdit.h"
#include "models/zimage_dit.h"

namespace {

namespace st = iomm::safetensors;

struct InspectOptions {
  std::string path;
  bool json = false;
  std::string save_copy;
  uint64_t max_shard_bytes = 0;
  bool pread = false;
  std::string config;  // model config: checkpoint vs. config check (see the header comment)
  bool memory = false;  // --memory: the training memory estimate of --config (train/memory_estimate.h)
  int64_t batch = 1, resolution = 512, checkpointing = 1, zero1 = 1;
  bool fp32 = false, ema_cpu = false;
};

// The generator's share of a training run's memory per device, from the config alone: no MLLM is read, so the
// adapter and the frozen MLLM are not in it (a run prints the full estimate at its start).
void print_memory(const InspectOptions& o, iomm::Config& cfg) {
  const int64_t width = cfg.get_int("generator.context_in_dim", cfg.get_int("generator.cap_feat_dim", 1536));
  auto g = iomm::GeneratorConfig::from_config(cfg, "generator", width);
  const int64_t side = o.resolution / 8 / g.patch_size();  // the FLUX VAE's 8× downsampling, then the patches
  iomm::MemoryInputs in;
  in.trainable_params = g.arch == "zimage" ? iomm::zimage_parameter_count(g.zimage) : iomm::mmdit_parameter_count(g.mmdit);
  in.zero1_ranks = int(o.zero1);
  in.activation_bytes = o.fp32 ? 4 : 2;
  in.checkpoint_every = o.checkpointing;
  in.image_tokens = side * side;
  in.context_tokens = cfg.get_int("conditioner.num_queries", 256);
  in.batch = o.batch;
  in.ema_on_cpu = o.ema_cpu;
  fmt::print("{} at {}², batch {} per device, {}, activation checkpointing every {} block(s), ZeRO-1 over {} "
             "rank(s), EMA on the {}; generator only (the adapter and the frozen MLLM come on top: a run prints them):\n{}\n",
             o.config, o.resolution, o.batch, o.fp32 ? "fp32" : "bf16 autocast", o.checkpointing, o.zero1,
             o.ema_cpu ? "CPU" : "device", estimate_memory(g, in).describe());
}

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

// generator.arch = "zimage" (IOMM-XL): Z-Image's S3-DiT; the checkpoint check compares diffusers
// ZImageTransformer2DModel names and shapes with the meta-device model.
int run_zimage_config_check(const InspectOptions& o, iomm::Config& cfg) {
  auto zc = iomm::ZImageConfig::from_config(cfg, "generator");
  int64_t n = iomm::zimage_parameter_count(zc);
  fmt::print("{}: generator Z-Image S3-DiT D={} ({} heads of {}), {} layers + {} noise / {} context refiner "
             "blocks, context {}: {} parameters ({})\n",
             o.config, zc.dim, zc.n_heads, zc.head_dim(), zc.n_layers, zc.n_refiner_layers, zc.n_refiner_layers,
             zc.cap_feat_dim, n, human_count(static_cast<uint64_t>(n)));
  if (o.path.empty()) return 0;
  st::Checkpoint ckpt(o.path, o.pread ? st::ReadMode::Pread : st::ReadMode::Mmap);
  iomm::ZImageDiT m(zc, torch::TensorOptions().device(torch::kMeta));
  std::vector<std::string> missing, unexpected, mis_shaped;
  auto all_names = ckpt.names();
  std::set<std::string> names(all_names.begin(), all_names.end());
  for (auto& p : m->named_parameters()) {
    if (!names.count(p.key())) {
      missing.push_back(p.key());
      continue;
    }
    const auto& shape = ckpt.info(p.key()).shape;
    if (shape != p.value().sizes().vec())
      mis_shaped.push_back(fmt::format("{}: checkpoint {} vs config {}", p.key(), shape, p.value().sizes().vec()));
    names.erase(p.key());
  }
  unexpected.assign(names.begin(), names.end());
  if (!missing.empty() || !unexpected.empty() || !mis_shaped.empty())
    iomm::fail("{} vs {}: the checkpoint does not match the config; missing: [{}]; unexpected: [{}]; mis-shaped: "
               "[{}]",
               ckpt.source(), o.config, fmt::join(missing, ", "), fmt::join(unexpected, ", "),
               fmt::join(mis_shaped, "; "));
  fmt::print("{}: matches the config ({} tensors)\n", o.path, all_names.size());
  return 0;
}

int run_config_check(const InspectOptions& o) {
  auto cfg = iomm::Config::load(o.config);
  if (o.memory) {
    print_memory(o, cfg);
    return 0;
  }
  if (cfg.has("generator.arch") && cfg.get_choice("generator.arch", "mmdit", {"mmdit", "zimage"}) == "zimage")
    return run_zimage_config_check(o, cfg);
  auto mc = iomm::MMDiTConfig::from_config(cfg, "generator");
  int64_t n = iomm::mmdit_parameter_count(mc);
  fmt::print("{}: generator MM-DiT D={} ({} heads of {}), {} double + {} single blocks, context {}: {} parameters "
             "({})\n",
             o.config, mc.hidden_size, mc.num_heads, mc.head_dim(), mc.depth, mc.depth_single, mc.context_in_dim, n,
             human_count(static_cast<uint64_t>(n)));
  if (o.path.empty()) return 0;
  st::Checkpoint ckpt(o.path, o.pread ? st::ReadMode::Pread : st::ReadMode::Mmap);
  // Shapes only: meta tensors stand in for the data (name conversion concatenates them like real ones).
  std::map<std::string, at::Tensor> shapes;
  for (const auto& name : ckpt.names()) {
    const auto& t = ckpt.info(name);
    shapes[name] = torch::empty(t.shape, torch::TensorOptions().device(torch::kMeta).dtype(iomm::to_scalar_type(t.dtype)));
  }
  iomm::check_mmdit_checkpoint(mc, shapes, ckpt.source() + " vs " + o.config);
  fmt::print("{}: matches the config ({} tensors)\n", o.path, ckpt.names().size());
  return 0;
}

int run_inspect(const InspectOptions& o) {
  if (o.max_shard_bytes > 0 && o.save_copy.empty()) iomm::fail("--max-shard-bytes needs --save-copy OUT");
  if (!o.config.empty()) return run_config_check(o);
  if (o.path.empty()) iomm::fail("inspect needs a PATH (a checkpoint), or --config FILE (a model config)");
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
    app.add_option("path", o->path, "a .safetensors file, a *.safetensors.index.json, or a model directory");
    app.add_option("--config", o->config,
                   "model config (TOML with a [generator] table): print its parameter count; with PATH, check the "
                   "checkpoint's names and shapes against it")
        ->check(CLI::ExistingFile);
    app.add_flag("--memory", o->memory, "with --config: the training memory estimate per device (generator share)");
    app.add_option("--batch", o->batch, "--memory: samples per device and micro-batch")->check(CLI::PositiveNumber);
    app.add_option("--resolution", o->resolution, "--memory: image side in pixels")->check(CLI::Range(16, 8192));
    app.add_option("--checkpointing", o->checkpointing, "--memory: recompute every N-th block (0 = off)")
        ->check(CLI::Range(0, 1000));
    app.add_option("--zero1", o->zero1, "--memory: ranks the optimizer state is sharded over")
        ->check(CLI::Range(1, 1000000));
    app.add_flag("--fp32", o->fp32, "--memory: fp32 activations (default: bf16 autocast)");
    app.add_flag("--ema-cpu", o->ema_cpu, "--memory: the EMA in host memory (train.ema_device = \"cpu\")");
    app.add_flag("--json", o->json, "print one JSON object instead of a table");
    app.add_option("--save-copy", o->save_copy, "write every tensor (read through libtorch) to this path")
        ->group("");
    app.add_option("--max-shard-bytes", o->max_shard_bytes, "with --save-copy: a sharded directory")->group("");
    app.add_flag("--pread", o->pread, "read with pread instead of mmap")->group("");
    return [o] { return run_inspect(*o); };
  }}};

}  // namespace
