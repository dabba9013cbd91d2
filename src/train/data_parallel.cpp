#include "train/data_parallel.h"

#include <algorithm>
#include <numeric>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "train/distributed.h"

namespace iomm {

ParallelConfig ParallelConfig::from_config(Config& cfg) {
  ParallelConfig c;
  c.timeout_s = cfg.get_int("dist.timeout_s", c.timeout_s, 5, 86400);
  c.zero1 = cfg.get_bool("dist.zero1", c.zero1);
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

int DataParallel::rank() const { return pg_->rank(); }
int DataParallel::world_size() const { return pg_->size(); }
int DataParallel::local_world_size() const { return local_world_size_; }

std::string DataParallel::describe() const {
  return fmt::format("rank {} of {} ({}, {} per node, ZeRO-1 {}, timeout {} s)", rank(), world_size(),
                     pg_->backend(), local_world_size_, config_.zero1 ? "on" : "off", config_.timeout_s);
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
