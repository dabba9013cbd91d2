#include "apps/bench.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <numeric>

#include <fmt/format.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/torch.h>
#if IOMM_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "conditioning/condition_sequence.h"
#include "conditioning/mask_image_tokens.h"
#include "core/config.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/tensor_io.h"
#include "model/flops.h"
#include "model/iomm_model.h"
#include "models/mmdit.h"
#include "train/generator_trainer.h"
#include "train/mixed_precision.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace iomm {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

namespace {

// ------------------------------------------------------------------------------------------------ measurement

void sync(const c10::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize(d.index());
}

void reset_peak_memory(const c10::Device& d) {
#if IOMM_WITH_CUDA
  if (d.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(d.index());
#else
  (void)d;
#endif
}

// The CUDA caching allocator's peak since reset_peak_memory, or the process's peak RSS (which includes loading).
json peak_memory(const c10::Device& d) {
#if IOMM_WITH_CUDA
  if (d.is_cuda()) {
    auto st = c10::cuda::CUDACachingAllocator::getDeviceStats(d.index());
    auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    return {{"peak_memory_bytes", st.allocated_bytes[all].peak}, {"memory_kind", "cuda_allocated_peak"}};
  }
#endif
  (void)d;
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return {{"peak_memory_bytes", int64_t(u.ru_maxrss) * 1024}, {"memory_kind", "process_peak_rss"}};
}

// Median (mean of the middle two), extremes, mean and the 10th / 90th percentiles (nearest rank).
json timing_stats(std::vector<double> t) {
  if (t.empty()) fail("bench: no timed steps (set --steps to at least 1)");
  std::sort(t.begin(), t.end());
  size_t n = t.size();
  auto rank = [&](double q) { return t[std::min(n - 1, size_t(std::ceil(q * double(n))) - (q > 0 ? 1 : 0))]; };
  double median = n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
  return {{"median", median}, {"min", t.front()}, {"max", t.back()},
          {"mean", std::accumulate(t.begin(), t.end(), 0.0) / double(n)}, {"p10", rank(0.1)}, {"p90", rank(0.9)}};
}

// torch's profiler (Kineto) over the timed steps, saved as a Chrome trace.
void start_profile(const std::string& path, const c10::Device& d) {
  if (path.empty()) return;
  namespace tp = torch::profiler::impl;
  tp::ProfilerConfig config(tp::ProfilerState::KINETO);
  std::set<tp::ActivityType> acts = {tp::ActivityType::CPU};
  if (d.is_cuda()) acts.insert(tp::ActivityType::CUDA);
  torch::autograd::profiler::prepareProfiler(config, acts);
  torch::autograd::profiler::enableProfiler(config, acts);
}

void stop_profile(const std::string& path) {
  if (path.empty()) return;
  torch::autograd::profiler::disableProfiler()->save(path);
  fmt::print(stderr, "bench: profile of the timed steps -> {} (summary: python3 scripts/profile_summary.py {})\n",
             path, path);
}

// Runs fn(i) for i < warmup + steps; returns the wall times of the last `steps` calls (profiled with o.profile).
template <class Fn>
std::vector<double> time_calls(const BenchOptions& o, const c10::Device& d, Fn&& fn) {
  std::vector<double> times;
  const int64_t warmup = o.warmup, steps = o.steps;
  for (int64_t i = 0; i < warmup + steps; ++i) {
    if (i == warmup) reset_peak_memory(d), start_profile(o.profile, d);
    sync(d);
    auto t0 = Clock::now();
    fn(i);
    sync(d);
    if (i >= warmup) times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  stop_profile(o.profile);
  return times;
}

// The fields every result shares: timing, rate, memory, FLOPs and MFU.
json result(const std::string& kind, const std::vector<double>& times, double items, const char* rate_name,
            const FlopCount* flops, const c10::Device& d, const BenchOptions& o) {
  json r = {{"impl", "iomm"}, {"kind", kind}, {"device", d.str()}, {"threads", at::get_num_threads()},
            {"warmup", o.warmup}, {"steps", o.steps}, {"times", times}, {"step_seconds", timing_stats(times)}};
  double median = r["step_seconds"]["median"];
  r[rate_name] = items / median;
  r.update(peak_memory(d));
  r["flops_per_step"] = nullptr;
  r["achieved_tflops"] = nullptr;
  r["mfu"] = nullptr;
  r["peak_tflops"] = o.peak_tflops;
  if (flops) {
    r["flops_per_step"] = flops->total();
    r["flops"] = flops->parts;
    r["achieved_tflops"] = flops->total() / median / 1e12;
    if (d.is_cuda()) r["mfu"] = flops->total() / median / (o.peak_tflops * 1e12);
  }
  return r;
}

// ------------------------------------------------------------------------------------------------ model and batch

// Weights of order 1/sqrt(fan_in), norm scales near 1 and small biases, instead of adaLN-Zero's zero map: the
// loss then depends on every part, so the peer's agreement on it means something.
void perturb(const NamedTensors& params, uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed * 0x9E3779B97F4A7C15ULL + 0x5EED);
  auto f32 = torch::TensorOptions().dtype(torch::kFloat);
  for (auto& [name, p] : params) {
    auto n = at::randn(p.sizes(), gen, f32);
    bool scale = p.dim() == 1 && name.find("norm") != std::string::npos;
    if (p.dim() >= 2) n = n * std::pow(double(p[0].numel()), -0.5);
    else n = scale ? 1 + 0.2 * n : 0.2 * n;
    p.copy_(n);
  }
}

const std::vector<std::string> kDefaultCaptions = {
    "a photo of a red circle", "a photo of two blue squares", "a photo of a green triangle left of a yellow cross",
    "a photo of three purple circles"};

struct BatchSettings {
  int64_t batch_size = 32;
  int64_t activation_checkpointing = 0;
  std::string autocast = "none";
  std::string data = "image";
  double mix_ratio = 0.5, cfg_drop = 0.1;
  bool cfg_drop_images = true;
  TimestepSampling timesteps;
  std::vector<std::string> captions;
};

BatchSettings read_batch_settings(Config& cfg, const std::string& model_dtype) {
  BatchSettings s;
  s.autocast = autocast_from_config(cfg, model_dtype);
  s.batch_size = cfg.get_int("train.batch_size", s.batch_size, 1, kMaxBatchSize);
  s.activation_checkpointing = cfg.get_int("train.activation_checkpointing", 0, 0);
  s.data = cfg.has("train.stage") ? train_data(cfg) : cfg.get_choice("train.data", s.data, {"image", "pair", "mix"});
  s.mix_ratio = cfg.get_double("train.mix_ratio", s.mix_ratio, 0.0, 1.0);
  s.cfg_drop = cfg.get_double("train.cfg_drop", s.cfg_drop, 0.0, 1.0);
  s.cfg_drop_images = cfg.get_bool("train.cfg_drop_images", s.cfg_drop_images);
  s.timesteps = TimestepSampling::from_config(cfg, "train.timesteps");
  s.captions = cfg.get_string_list("sample.prompts", kDefaultCaptions);
  if (s.captions.empty()) s.captions = kDefaultCaptions;
  return s;
}

// The trainer's draw (train/generator_trainer.cpp) on synthetic images: kind by train.data / mix_ratio, then CFG
// dropout to the unconditional prompt.
std::vector<ConditionInput> draw_conditions(const BatchSettings& s, const at::Tensor& images, at::Generator& gen) {
  int64_t B = images.size(0);
  auto u_kind = torch::rand({B}, gen), u_drop = torch::rand({B}, gen);
  std::vector<ConditionInput> conds;
  for (int64_t i = 0; i < B; ++i) {
    bool image = s.data == "image" || (s.data == "mix" && u_kind[i].item<float>() < s.mix_ratio);
    bool drop = u_drop[i].item<float>() < s.cfg_drop && (!image || s.cfg_drop_images);
    if (drop) conds.push_back({ConditionKind::uncond, "", {}});
    else if (image) conds.push_back({ConditionKind::image, "", images[i]});
    else conds.push_back({ConditionKind::text, s.captions[size_t(i) % s.captions.size()], {}});
  }
  return conds;
}

// One batch with every random draw made here (MIM keep-mask, t, noise), so that the peer can use the same.
TrainingBatch make_batch(const IommModel& m, const BatchSettings& s, at::Generator& gen) {
  int64_t R = m.config().resolution, B = s.batch_size;
  TrainingBatch b;
  b.images = torch::rand({B, 3, R, R}, gen) * 2 - 1;
  b.conds = draw_conditions(s, b.images, gen);
  int64_t rows = 0;
  for (auto& c : b.conds) rows += c.kind == ConditionKind::image;
  const auto& cc = m.conditioner();
  if (rows > 0) {
    auto probe = torch::zeros({rows, cc.image_tokens_per_image(), cc.width()});
    b.keep = mask_image_tokens(probe, cc.config.mask_ratio, gen, cc.config.mask_granularity).keep;
  }
  b.t = sample_timesteps(s.timesteps, B, m.image_seq_len(), gen);
  int64_t p = m.config().generator.patch_size();
  b.noise = torch::randn({B, m.image_seq_len(), m.autoencoder().latent_channels() * p * p}, gen);
  return b;
}

c10::Device model_device(const IommModel& m) { return c10::Device(m.config().device); }

void set_threads(int64_t threads) {
  if (threads > 0) at::set_num_threads(int(threads));
}

// ------------------------------------------------------------------------------------------------ dumps

json condition_json(const std::vector<ConditionInput>& conds) {
  json a = json::array();
  for (auto& c : conds) a.push_back({{"kind", name(c.kind)}, {"text", c.text}});
  return a;
}

// The model at its current weights: iomm's directory, and the MM-DiT also in diffusers' layout for the peer.
void dump_model(const IommModel& m, const std::string& dir) {
  fs::create_directories(dir);
  m.save(dir + "/model");
  if (m.config().generator.arch != "mmdit") return;  // Z-Image is saved in diffusers' names already
  auto g = load_mmdit(dir + "/model/generator", "cpu", "float32");
  // diffusers' FluxPosEmbed has no theta in its config (fixed 10000); the peer sets pos_embed.theta from
  // model/iomm.toml, so the export states 10000 and the weights are the same.
  g->config.theta = 10000.0;
  save_mmdit(g, dir + "/generator-diffusers", "diffusers");
}

void dump_train_inputs(const IommModel& m, const TrainingBatch& b, const LoopConfig& loop, const BenchOptions& o,
                       const std::string& dir) {
  dump_model(m, dir);
  const auto& cc = m.conditioner();
  auto tok = tokenize_conditions(b.conds, cc.config.templates, cc.tokenizer, cc.image_tokens_per_image(), cc.pad_id);
  std::map<std::string, at::Tensor> t = {{"images", b.images},   {"t", b.t}, {"noise", b.noise},
                                         {"input_ids", tok.input_ids}, {"attention_mask", tok.attention_mask}};
  if (b.keep.defined()) t["keep"] = b.keep;
  save_tensors(dir + "/batch.safetensors", t, {{"writer", "iomm bench train"}});
  const auto& op = loop.optim;
  json j = {{"conditions", condition_json(b.conds)},
            {"optim", {{"lr", op.lr}, {"betas", {op.beta1, op.beta2}}, {"eps", op.eps},
                       {"weight_decay", op.weight_decay}, {"grad_clip", op.grad_clip}}},
            {"ema_decay", loop.ema_decay}, {"warmup", o.warmup}, {"steps", o.steps},
            {"threads", at::get_num_threads()}};
  write_file_atomic(dir + "/batch.json", j.dump(1) + "\n");
}

void write_result(const json& r, const std::string& dir) {
  if (!dir.empty()) write_file_atomic(dir + "/bench.json", r.dump(1) + "\n");
}

}  // namespace

// ------------------------------------------------------------------------------------------------ train

json bench_train(Config& cfg, const BenchOptions& o) {
  auto mc = IommModelConfig::from_config(cfg);
  auto s = read_batch_settings(cfg, mc.dtype);
  auto loop = LoopConfig::from_config(cfg, LoopConfig{});
  for (auto key : {"data", "sample", "train.init_from"}) cfg.erase(key);  // the trainer's, not the step's
  cfg.check_unused();
  loop.optim.warmup_steps = 0;  // a constant LR: the peer replays the same updates without a schedule
  loop.optim.schedule = "constant";
  if (o.threads > 0) loop.threads = o.threads;
  apply_process_settings(loop);

  auto model = IommModel::create(mc, loop.seed);
  model.set_activation_checkpointing(s.activation_checkpointing);
  auto params = model.trainable();
  if (o.perturb) perturb(params, loop.seed);
  auto gen = step_generator(loop.seed, 0, 7);
  auto batch = make_batch(model, s, gen);
  if (!o.dump.empty()) dump_train_inputs(model, batch, loop, o, o.dump);

  Optimizer opt(params, loop.optim);
  std::optional<Ema> ema;
  if (loop.ema_decay > 0) ema.emplace(params, loop.ema_decay);
  model.set_training(true);
  std::vector<double> losses;
  auto dev = model_device(model);
  auto times = time_calls(o, dev, [&](int64_t step) {
    auto g = step_generator(loop.seed, step, 0);  // unused draws: the batch fixes masks, t and noise
    FlowLoss fl;
    {
      AutocastScope autocast(mc.device, s.autocast);
      fl = model.loss(batch, s.timesteps, g);
    }
    fl.loss.backward();
    losses.push_back(fl.loss.item<double>());
    opt.step(step);
    if (ema) ema->update(params, ema->warmup_decay(step));
  });
  auto flops = training_step_flops(model, condition_shape(model, batch.conds));
  json r = result("train", times, double(s.batch_size), "samples_per_s", &flops, dev, o);
  r["batch_size"] = s.batch_size;
  r["activation_checkpointing"] = s.activation_checkpointing;
  r["autocast"] = s.autocast;
  r["dtype"] = mc.dtype;
  r["losses"] = losses;
  r["first_loss"] = losses.front();
  r["config"] = cfg.source();
  write_result(r, o.dump);
  return r;
}

// ------------------------------------------------------------------------------------------------ generate

json bench_generate(Config& cfg, const BenchOptions& o, const GenerateBenchOptions& g) {
  auto prompts = cfg.get_string_list("sample.prompts", kDefaultCaptions);
  if (prompts.empty()) prompts = kDefaultCaptions;
  std::optional<IommModel> model;
  if (!g.model_dir.empty()) {
    model.emplace(IommModel::load(g.model_dir));
  } else {
    auto mc = IommModelConfig::from_config(cfg);
    auto seed = uint64_t(cfg.get_int("train.seed", 0, 0));
    model.emplace(IommModel::create(mc, seed));
    if (o.perturb) perturb(model->trainable(), seed);
  }
  set_threads(o.threads > 0 ? o.threads : cfg.get_int("train.threads", 0, 0));
  std::vector<ConditionInput> conds;
  std::vector<std::string> used;
  for (int64_t i = 0; i < g.images; ++i) {
    used.push_back(prompts[size_t(i) % prompts.size()]);
    conds.push_back({ConditionKind::text, used.back(), {}});
  }
  GenerateOptions go;
  go.steps = g.steps;
  go.cfg_scale = g.cfg_scale;
  go.sampler = g.sampler;
  go.shift = g.shift;
  go.seed = g.seed;
  if (!o.dump.empty()) dump_model(*model, o.dump);
  at::Tensor images;
  auto dev = model_device(*model);
  auto times = time_calls(o, dev, [&](int64_t) { images = model->generate(conds, go); });
  std::vector<ConditionInput> un(conds.size(), ConditionInput{ConditionKind::uncond, "", {}});
  auto flops = generation_flops(*model, condition_shape(*model, conds), condition_shape(*model, un), g.steps,
                                g.cfg_scale != 1.0);
  json r = result("generate", times, double(g.images), "images_per_s", &flops, dev, o);
  r.update({{"images", g.images}, {"sampler_steps", g.steps}, {"cfg_scale", g.cfg_scale}, {"sampler", g.sampler},
            {"dtype", model->config().dtype}, {"config", g.model_dir.empty() ? cfg.source() : g.model_dir}});
  if (!o.dump.empty()) {
    json spec = {{"prompts", used}, {"steps", g.steps}, {"cfg_scale", g.cfg_scale}, {"sampler", g.sampler},
                 {"shift", g.shift}, {"seed", g.seed}};
    write_file_atomic(o.dump + "/generate.json", spec.dump(1) + "\n");
    save_tensors(o.dump + "/generate.safetensors", {{"images", images.cpu()}}, {{"writer", "iomm bench generate"}});
  }
  write_result(r, o.dump);
  return r;
}

// ------------------------------------------------------------------------------------------------ component

json bench_component(const std::string& name, const ForwardOptions& fo, const TensorMap& inputs, bool backward,
                     const BenchOptions& o) {
  const auto& c = find_forward_component(name);
  check_component_inputs(c, inputs, "--inputs");
  set_threads(o.threads);
  auto loaded = c.load(fo);
  TensorMap in = inputs;
  if (backward) {
    for (auto& p : loaded.parameters)
      if (p.is_floating_point()) p.requires_grad_(true);
    for (auto& [k, t] : in)
      if (t.is_floating_point()) t = t.detach().clone().requires_grad_(true);
  }
  c10::Device dev(fo.device);
  auto times = time_calls(o, dev, [&](int64_t) {
    torch::AutoGradMode grad(backward);
    auto out = loaded.run(in);
    check_component_outputs(c, out);
    if (!backward) return;
    at::Tensor total = torch::zeros({}, torch::kDouble);
    for (auto& [k, t] : out)
      if (t.requires_grad()) total = total + t.sum().to(torch::kDouble).cpu();
    if (!total.requires_grad()) fail("bench component {}: no output depends on a parameter or an input", name);
    total.backward();
    for (auto& p : loaded.parameters) p.mutable_grad() = at::Tensor();
  });
  json r = result(backward ? "component-forward-backward" : "component-forward", times, 1.0, "calls_per_s", nullptr,
                  dev, o);
  r.update({{"component", name}, {"model", fo.model_dir}, {"dtype", fo.dtype},
            {"flops_note", "FLOPs are counted for the train and generate benchmarks, from the model config"}});
  return r;
}

// ------------------------------------------------------------------------------------------------ report

std::string format_bench(const json& r) {
  const auto& s = r.at("step_seconds");
  std::string rate_key = r.contains("samples_per_s") ? "samples_per_s" : r.contains("images_per_s") ? "images_per_s"
                                                                                                     : "calls_per_s";
  std::string out = fmt::format("bench {} on {} ({} threads)\n", r.at("kind").get<std::string>(),
                                r.at("device").get<std::string>(), r.at("threads").get<int>());
  const char* unit = r.at("kind") == "train" ? "step" : "call";
  out += fmt::format("  time    median {:.4f} s per {} (min {:.4f}, p10 {:.4f}, p90 {:.4f}, max {:.4f}; {} timed after {} "
                     "warm-up)\n",
                     s.at("median").get<double>(), unit, s.at("min").get<double>(), s.at("p10").get<double>(),
                     s.at("p90").get<double>(), s.at("max").get<double>(), r.at("steps").get<int64_t>(),
                     r.at("warmup").get<int64_t>());
  out += fmt::format("  rate    {:.2f} {}\n", r.at(rate_key).get<double>(), rate_key);
  out += fmt::format("  memory  {:.1f} MiB ({})\n", r.at("peak_memory_bytes").get<double>() / (1 << 20),
                     r.at("memory_kind").get<std::string>());
  if (!r.at("flops_per_step").is_null()) {
    double total = r.at("flops_per_step");
    std::string parts;
    for (auto& [k, v] : r.at("flops").items())
      if (v.get<double>() > 0) parts += fmt::format("{}{} {:.0f}%", parts.empty() ? "" : ", ", k, 100 * v.get<double>() / total);
    out += fmt::format("  flops   {:.4g} GFLOP per {} ({}); achieved {:.4g} TFLOP/s\n", total / 1e9, unit, parts,
                       r.at("achieved_tflops").get<double>());
    out += r.at("mfu").is_null() ? std::string("  mfu     n/a (not a GPU)\n")
                                 : fmt::format("  mfu     {:.1f}% of {} TFLOP/s\n", 100 * r.at("mfu").get<double>(),
                                               r.at("peak_tflops").get<double>());
  }
  if (r.contains("first_loss"))
    out += fmt::format("  loss    first {:.6f}, last {:.6f}\n", r.at("first_loss").get<double>(),
                       r.at("losses").back().get<double>());
  return out;
}

}  // namespace iomm
