#include "train/data_parallel.h"

#include <algorithm>
#include <numeric>

#include <mutex>

#include <spdlog/spdlog.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "train/distributed.h"

namespace iomm {

ParallelConfig ParallelConfig::from_config(Config& cfg) {
  ParallelConfig c;
  c.timeout_s = cfg.get_int("dist.timeout_s", c.timeout_s, 5, 86400);
  c.zero1 = cfg.get_bool("dist.zero1", c.zero1);
  c.overlap = cfg.get_bool("dist.overlap", c.overlap);
  c.bucket_mb = cfg.get_double("dist.bucket_mb", c.bucket_mb, 0.001, 4096.0);
  return c;
}

std::unique_ptr<DataParallel> DataParallel::from_environment(const std::string& device, const ParallelConfig& c) {
  auto env = DistEnv::from_environment();
  if (!env.distributed()) return nullptr;
  auto pg = ProcessGroup::join(env, device, std::chrono::seconds(c.timeout_s));
  return std::unique_ptr<DataParallel>(new DataParallel(std::move(pg), c, env.local_world_size));
}

DataParallel::DataParallel(std::unique_ptr<ProcessGroup> pg, ParallelConfig c, int local_world_size)
    : pg_(std::move(pg)), config_(c), local_world_size_(local_world_size) {}
DataParallel::~DataParallel() = default;

struct DataParallel::Buckets {
  NamedTensors params;
  std::vector<size_t> bucket_of;                 // per parameter
  std::vector<std::vector<size_t>> members;      // per bucket, its parameters
  std::vector<size_t> ready;                     // per bucket, parameters whose gradient is in (this backward)
  std::vector<bool> seen;                        // per parameter, in this backward
  std::vector<at::Tensor> flat;                  // per bucket, the buffer in flight
  std::vector<std::shared_ptr<ProcessGroup::Pending>> pending;
  size_t next = 0;                               // the next bucket to start: always in index order
  bool syncing = false;
  bool reported = false;
  std::mutex mutex;                              // hooks run on the autograd engine's threads
};

namespace {

// Called by autograd after a parameter's gradient was accumulated into .grad (AccumulateGrad's post hook).
struct GradientReadyHook : torch::autograd::PostAccumulateGradHook {
  GradientReadyHook(std::function<void()> f) : on_ready(std::move(f)) {}
  void operator()(const torch::autograd::Variable&) override { on_ready(); }
  std::function<void()> on_ready;
};

}  // namespace

void DataParallel::attach_gradient_hooks(const NamedTensors& params) {
  buckets_ = std::make_unique<Buckets>();
  auto& b = *buckets_;
  b.params = params;
  b.bucket_of.assign(params.size(), 0);
  const uint64_t cap = uint64_t(config_.bucket_mb * 1024 * 1024);
  uint64_t bytes = cap;  // start a new bucket on the first parameter
  for (size_t k = params.size(); k-- > 0;) {  // reverse: the last layers' gradients are complete first
    const auto& p = params[k].second;
    bool fits = !b.members.empty() && bytes + p.nbytes() <= cap &&
                p.scalar_type() == params[b.members.back().front()].second.scalar_type();
    if (!fits) b.members.emplace_back(), bytes = 0;
    b.members.back().push_back(k);
    b.bucket_of[k] = b.members.size() - 1;
    bytes += p.nbytes();
  }
  b.ready.assign(b.members.size(), 0);
  b.seen.assign(params.size(), false);
  b.flat.resize(b.members.size());
  b.pending.resize(b.members.size());
  for (size_t k = 0; k < params.size(); ++k)
    torch::autograd::impl::set_post_acc_grad_hooks(
        params[k].second, std::make_unique<GradientReadyHook>([this, k] { gradient_ready(k); }));
  spdlog::info("gradient all-reduce overlapped with backward: {} parameters in {} buckets of <= {:g} MiB",
               params.size(), b.members.size(), config_.bucket_mb);
}

void DataParallel::begin_sync() {
  std::lock_guard<std::mutex> lock(buckets_->mutex);
  buckets_->syncing = true;
}

void DataParallel::gradient_ready(size_t k) {
  auto& b = *buckets_;
  std::lock_guard<std::mutex> lock(b.mutex);
  if (!b.syncing) return;
  const size_t bucket = b.bucket_of[k];
  // A second accumulation into a parameter after its bucket left would be lost: refuse rather than average stale
  // gradients (a parameter used in two reentrant backward passes could do this).
  if (b.seen[k] && bucket < b.next)
    fail("{}: its gradient was accumulated twice in one backward, after its bucket's all-reduce had started; set "
         "dist.overlap = false",
         b.params[k].first);
  if (b.seen[k]) return;
  b.seen[k] = true;
  ++b.ready[bucket];
  while (b.next < b.members.size() && b.ready[b.next] == b.members[b.next].size()) start_bucket(b.next++);
}

void DataParallel::start_bucket(size_t i) {
  auto& b = *buckets_;
  std::vector<at::Tensor> parts;
  for (size_t k : b.members[i]) {
    auto& p = b.params[k].second;
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    parts.push_back(p.grad().reshape(-1));
  }
  b.flat[i] = torch::cat(parts);
  b.pending[i] = pg_->start_all_reduce_sum(b.flat[i]);
}

void DataParallel::finish_gradients() {
  auto& b = *buckets_;
  std::lock_guard<std::mutex> lock(b.mutex);
  if (!b.reported) {  // once: how much of the communication the overlap actually moved into backward
    spdlog::info("first step: {} of {} gradient buckets started their all-reduce during backward", b.next,
                 b.members.size());
    b.reported = true;
  }
  while (b.next < b.members.size()) start_bucket(b.next++);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < b.members.size(); ++i) {
    pg_->wait(b.pending[i]);
    b.flat[i].div_(world_size());
    int64_t off = 0;
    for (size_t k : b.members[i]) {
      auto& g = b.params[k].second.mutable_grad();
      g.copy_(b.flat[i].narrow(0, off, g.numel()).view_as(g));
      off += g.numel();
    }
    b.flat[i] = at::Tensor(), b.pending[i] = nullptr;
  }
  std::fill(b.ready.begin(), b.ready.end(), size_t{0});
  std::fill(b.seen.begin(), b.seen.end(), false);
  b.next = 0;
  b.syncing = false;
}

int DataParallel::rank() const { return pg_->rank(); }
int DataParallel::world_size() const { return pg_->size(); }
int DataParallel::local_world_size() const { return local_world_size_; }

std::string DataParallel::describe() const {
  return fmt::format("rank {} of {} ({}, {} per node, ZeRO-1 {}, gradient all-reduce {}, timeout {} s)", rank(),
                     world_size(), pg_->backend(), local_world_size_, config_.zero1 ? "on" : "off",
                     config_.overlap ? "overlapped with backward" : "after backward", config_.timeout_s);
}

void DataParallel::average_gradients(const NamedTensors& params) {
  std::vector<at::Tensor> grads;
  for (auto& [name, p] : params) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad());
  }
  pg_->all_reduce_mean(grads);
}

double DataParallel::mean(double v) { return pg_->all_reduce_mean(v); }

void DataParallel::sum(std::vector<double>& values) {
  if (values.empty()) return;
  std::vector<at::Tensor> t = {torch::tensor(values, torch::kDouble)};
  pg_->all_reduce_sum(t);
  auto a = t[0].accessor<double, 1>();
  for (size_t i = 0; i < values.size(); ++i) values[i] = a[int64_t(i)];
}

void DataParallel::broadcast_parameters(const NamedTensors& params, int root) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> ts;
  for (auto& [name, p] : params) ts.push_back(p.detach());
  pg_->broadcast(ts, root);
}

std::vector<std::string> DataParallel::gather_strings(const std::string& s) {
  // Lengths first, then the bytes padded to the longest: all-gather needs one shape on every rank.
  auto lengths = pg_->all_gather(torch::full({1}, int64_t(s.size()), torch::kInt64));
  int64_t longest = 0;
  for (auto& l : lengths) longest = std::max(longest, l.item<int64_t>());
  auto bytes = torch::zeros({std::max<int64_t>(longest, 1)}, torch::kUInt8);
  std::copy(s.begin(), s.end(), bytes.data_ptr<uint8_t>());
  auto all = pg_->all_gather(bytes);
  std::vector<std::string> out;
  for (size_t r = 0; r < all.size(); ++r) {
    auto* p = all[r].data_ptr<uint8_t>();
    out.emplace_back(reinterpret_cast<const char*>(p), size_t(lengths[r].item<int64_t>()));
  }
  return out;
}

void DataParallel::barrier() { pg_->barrier(); }

std::vector<int> DataParallel::owners(const NamedTensors& params) const {
  // Largest first to the least-loaded rank: deterministic, and within one tensor of an even split.
  std::vector<size_t> order(params.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return params[a].second.numel() > params[b].second.numel(); });
  std::vector<int64_t> load(size_t(world_size()), 0);
  std::vector<int> owner(params.size(), 0);
  for (size_t i : order) {
    int r = int(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = r;
    load[size_t(r)] += params[i].second.numel();
  }
  return owner;
}

void DataParallel::broadcast_from_owners(const NamedTensors& params, const std::vector<int>& owners) {
  torch::NoGradGuard no_grad;
  for (int r = 0; r < world_size(); ++r) {
    std::vector<at::Tensor> mine;
    for (size_t i = 0; i < params.size(); ++i)
      if (owners[i] == r) mine.push_back(params[i].second.detach());
    if (mine.empty()) continue;
    // One flat buffer per owner: a handful of messages per step instead of one per tensor.
    std::vector<at::Tensor> flat = {torch::cat([&] {
      std::vector<at::Tensor> v;
      for (auto& t : mine) v.push_back(t.reshape(-1));
      return v;
    }())};
    pg_->broadcast(flat, r);
    int64_t off = 0;
    for (auto& t : mine) {
      t.copy_(flat[0].narrow(0, off, t.numel()).view_as(t));
      off += t.numel();
    }
  }
}

nlohmann::json combine_data_states(const std::vector<std::string>& per_rank) {
  if (per_rank.size() == 1) return nlohmann::json::parse(per_rank[0]);
  nlohmann::json ranks = nlohmann::json::array();
  bool any = false;
  for (auto& s : per_rank) {
    ranks.push_back(nlohmann::json::parse(s));
    any = any || !ranks.back().is_null();
  }
  if (!any) return nullptr;
  return {{"world_size", per_rank.size()}, {"ranks", ranks}};
}

nlohmann::json data_state_for_rank(const nlohmann::json& saved, int rank, int world, const std::string& where) {
  if (saved.is_null()) return saved;
  int saved_world = saved.contains("ranks") ? saved.value("world_size", 0) : 1;
  if (saved_world != world)
    fail("{}: the streaming loader's positions were recorded for {} rank(s), and this run has {}: each rank reads "
         "its own shards, so the streams cannot continue on another world size. Resume with {} process(es), or "
         "use data.loader = \"memory\" (it draws per sample and resumes on any world size)",
         where, saved_world, world, saved_world);
  return saved.contains("ranks") ? saved["ranks"].at(size_t(rank)) : saved;
}

nlohmann::json combine_data_metrics(const std::vector<std::string>& per_rank) {
  auto out = nlohmann::json::parse(per_rank.at(0));
  if (!out.is_object() || !out.contains("data_skipped")) return out;
  for (size_t r = 1; r < per_rank.size(); ++r) {
    auto other = nlohmann::json::parse(per_rank[r]);
    for (auto& [cause, n] : other.value("data_skipped", nlohmann::json::object()).items())
      out["data_skipped"][cause] = out["data_skipped"].value(cause, int64_t{0}) + n.get<int64_t>();
  }
  return out;
}

}  // namespace iomm
