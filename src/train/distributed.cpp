// c10d from C++ (see distributed.h). This file is compiled with USE_C10D_GLOO (and USE_C10D_NCCL in a CUDA build)
// and without the precompiled header.
//
// Gloo's headers: the torch wheel ships c10d's headers but not gloo's, which ProcessGroupGloo.hpp includes; Debian's
// libgloo-dev (an older gloo) supplies them. That is sound here because this file only declares against them: it
// calls ProcessGroupGloo::Options::create, createDefaultDevice and the constructor (all compiled inside
// libtorch_cpu, against the wheel's own gloo), then the c10d::Backend virtuals. Every gloo type that
// ProcessGroupGloo holds is behind a shared_ptr/unique_ptr, so the object's size and layout come from c10d's
// headers, which match the wheel; no gloo class is constructed or called inline here. Checked with 2-rank
// all-reduce, broadcast, all-gather and barrier (src/train/distributed_test.cpp, tests/conformance/test_launch.py).
#include "train/distributed.h"

#include <atomic>
#include <cstdlib>
#include <regex>
#include <thread>

#include <spdlog/spdlog.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "core/error.h"

namespace iomm {

namespace {

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

int env_int(const char* name, int fallback, int min_value) {
  auto v = env(name);
  if (!v) return fallback;
  try {
    size_t used = 0;
    int x = std::stoi(*v, &used);
    if (used == v->size() && x >= min_value) return x;
  } catch (const std::exception&) {
  }
  fail("environment variable {}='{}' is not an integer >= {}; fix the launcher's settings", name, *v, min_value);
}

// SLURM_STEP_TASKS_PER_NODE / SLURM_NTASKS_PER_NODE look like "4" or "4(x2)": the tasks on this node.
int slurm_tasks_per_node(int fallback) {
  for (const char* name : {"SLURM_STEP_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE"})
    if (auto v = env(name)) {
      std::smatch m;
      if (std::regex_search(*v, m, std::regex(R"(^(\d+))"))) return std::stoi(m[1]);
    }
  return fallback;
}

}  // namespace

std::string first_slurm_host(const std::string& list) {
  // The first entry is everything up to the first comma outside brackets.
  size_t end = 0;
  for (int depth = 0; end < list.size() && !(list[end] == ',' && depth == 0); ++end)
    depth += list[end] == '[' ? 1 : list[end] == ']' ? -1 : 0;
  const std::string first = list.substr(0, end);
  const size_t lb = first.find('['), rb = first.find(']');
  if (lb == std::string::npos || rb == std::string::npos) return first;
  const std::string range = first.substr(lb + 1, rb - lb - 1);     // "003-010,012"
  return first.substr(0, lb) + range.substr(0, range.find_first_of(",-")) + first.substr(rb + 1);
}

DistEnv DistEnv::from_environment() {
  DistEnv e;
  if (env("RANK") || env("WORLD_SIZE")) {
    e.launcher = "torchrun";
    e.rank = env_int("RANK", 0, 0);
    e.world_size = env_int("WORLD_SIZE", 1, 1);
    e.local_rank = env_int("LOCAL_RANK", e.rank, 0);
    e.local_world_size = env_int("LOCAL_WORLD_SIZE", e.world_size, 1);
  } else if (env("SLURM_PROCID") && env("SLURM_NTASKS")) {
    e.launcher = "slurm";
    e.rank = env_int("SLURM_PROCID", 0, 0);
    e.world_size = env_int("SLURM_NTASKS", 1, 1);
    e.local_rank = env_int("SLURM_LOCALID", 0, 0);
    e.local_world_size = slurm_tasks_per_node(e.world_size);
    if (auto nodes = env("SLURM_JOB_NODELIST")) e.master_addr = first_slurm_host(*nodes);
  }
  if (auto a = env("MASTER_ADDR")) e.master_addr = *a;
  e.master_port = env_int("MASTER_PORT", e.master_port, 1);
  if (e.rank >= e.world_size)
    fail("rank {} is not below the world size {} (from {}): check the launcher's settings", e.rank, e.world_size,
         e.launcher);
  return e;
}

std::string DistEnv::describe() const {
  return fmt::format("rank {} of {} (local {} of {}, {}, rendezvous {}:{})", rank, world_size, local_rank,
                     local_world_size, launcher, master_addr, master_port);
}

// ---- the process group ----

struct ProcessGroup::Impl {
  DistEnv env;
  std::chrono::seconds timeout{};
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
  std::string backend;
  std::atomic<bool> stop{false};
  std::thread heartbeat;

  void beat() {
    // Its own connection: the store client of the collectives may be blocked in a wait.
    c10d::TCPStoreOptions so;
    so.port = uint16_t(env.master_port);
    so.isServer = false;
    so.waitWorkers = false;
    so.timeout = timeout;
    try {
      auto s = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
      for (int64_t n = 1; !stop; ++n) {
        s->set("iomm/heartbeat/" + std::to_string(env.rank), std::vector<uint8_t>{uint8_t(n & 0xff)});
        for (int i = 0; i < 10 && !stop; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    } catch (const std::exception&) {
      // The store is gone (rank 0 ended): collectives will say so.
    }
  }

  // The ranks whose heartbeat did not move over ~2.5 s (the store answers while rank 0 lives).
  std::vector<int> silent_ranks() {
    std::vector<std::vector<uint8_t>> before(size_t(env.world_size));
    for (int r = 0; r < env.world_size; ++r) before[size_t(r)] = store->get("iomm/heartbeat/" + std::to_string(r));
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    std::vector<int> silent;
    for (int r = 0; r < env.world_size; ++r)
      if (r != env.rank && store->get("iomm/heartbeat/" + std::to_string(r)) == before[size_t(r)])
        silent.push_back(r);
    return silent;
  }

  [[noreturn]] void collective_failed(const char* what, const std::exception& e) {
    std::string who;
    try {
      auto silent = silent_ranks();
      who = silent.empty() ? "every peer still beats, so one is hung or the network failed"
                           : fmt::format("rank(s) {} stopped (died or hung)", fmt::join(silent, ", "));
    } catch (const std::exception&) {
      who = env.rank == 0 ? "the store is unreachable" : "rank 0 (the rendezvous host) is gone";
    }
    std::string detail = e.what();
    detail = detail.substr(0, detail.find('\n'));
    fail("rank {} of {}: {} failed: {}; {}. The last complete checkpoint is intact: restart the job with --resume "
         "(the {} s timeout bounds the wait)",
         env.rank, env.world_size, what, detail, who, timeout.count());
  }

  template <class Fn>
  void run(const char* what, Fn&& fn) {
    try {
      fn()->wait(timeout);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      collective_failed(what, e);
    }
  }

  ~Impl() {
    stop = true;
    if (heartbeat.joinable()) heartbeat.join();
  }
};

namespace {

c10::intrusive_ptr<c10d::Backend> make_backend(const c10::intrusive_ptr<c10d::Store>& store, const DistEnv& e,
                                               const std::string& device, std::chrono::seconds timeout,
                                               std::string& name) {
  if (device.rfind("cuda", 0) == 0) {
#ifdef USE_C10D_NCCL
    name = "nccl";
    auto o = c10d::ProcessGroupNCCL::Options::create();
    o->timeout = timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, e.rank, e.world_size, o);
#else
    fail("model.device = {} needs NCCL, and this build has no NCCL (a CPU build): build with the CUDA torch wheel",
         device);
#endif
  }
  name = "gloo";
  auto o = c10d::ProcessGroupGloo::Options::create();
  o->timeout = timeout;
  o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, e.rank, e.world_size, o);
}

}  // namespace

std::unique_ptr<ProcessGroup> ProcessGroup::join(const DistEnv& e, const std::string& device,
                                                 std::chrono::seconds timeout) {
  auto impl = std::make_unique<Impl>();
  impl->env = e;
  impl->timeout = timeout;
  c10d::TCPStoreOptions so;
  so.port = uint16_t(e.master_port);
  so.isServer = e.rank == 0;
  so.numWorkers = e.world_size;
  so.timeout = timeout;
  try {
    impl->store = c10::make_intrusive<c10d::TCPStore>(e.master_addr, so);
    impl->pg = make_backend(impl->store, e, device, timeout, impl->backend);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& ex) {
    std::string d = ex.what();
    fail("{}: joining the process group failed within {} s: {}; check MASTER_ADDR/MASTER_PORT and that all {} ranks "
         "started",
         e.describe(), timeout.count(), d.substr(0, d.find('\n')), e.world_size);
  }
  impl->store->set("iomm/heartbeat/" + std::to_string(e.rank), std::vector<uint8_t>{0});
  auto* raw = impl.get();
  impl->heartbeat = std::thread([raw] { raw->beat(); });
  std::unique_ptr<ProcessGroup> pg(new ProcessGroup(std::move(impl)));
  pg->barrier();  // every heartbeat key exists before anyone can fail and read them
  return pg;
}

ProcessGroup::ProcessGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ProcessGroup::~ProcessGroup() = default;
int ProcessGroup::rank() const { return impl_->env.rank; }
int ProcessGroup::size() const { return impl_->env.world_size; }
std::string ProcessGroup::backend() const { return impl_->backend; }

void ProcessGroup::all_reduce_sum(std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  size_t i = 0;
  while (i < tensors.size()) {
    // One bucket: consecutive tensors of one dtype and device up to bucket_bytes, flattened into one buffer.
    size_t j = i;
    int64_t bytes = 0;
    while (j < tensors.size() && (j == i || (bytes + tensors[j].nbytes() <= uint64_t(bucket_bytes) &&
                                             tensors[j].scalar_type() == tensors[i].scalar_type() &&
                                             tensors[j].device() == tensors[i].device())))
      bytes += int64_t(tensors[j++].nbytes());
    std::vector<at::Tensor> parts(tensors.begin() + long(i), tensors.begin() + long(j));
    std::vector<at::Tensor> flat = {torch::cat([&] {
      std::vector<at::Tensor> v;
      for (auto& t : parts) v.push_back(t.reshape(-1));
      return v;
    }())};
    impl_->run("all-reduce", [&] { return impl_->pg->allreduce(flat); });
    int64_t off = 0;
    for (auto& t : parts) {
      t.copy_(flat[0].narrow(0, off, t.numel()).view_as(t));
      off += t.numel();
    }
    i = j;
  }
}

struct ProcessGroup::Pending {
  c10::intrusive_ptr<c10d::Work> work;
};

std::shared_ptr<ProcessGroup::Pending> ProcessGroup::start_all_reduce_sum(const at::Tensor& flat) {
  std::vector<at::Tensor> one = {flat};
  auto p = std::make_shared<Pending>();
  try {
    p->work = impl_->pg->allreduce(one);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    impl_->collective_failed("all-reduce", e);
  }
  return p;
}

void ProcessGroup::wait(const std::shared_ptr<Pending>& pending) {
  impl_->run("all-reduce", [&] { return pending->work; });
}

void ProcessGroup::all_reduce_mean(std::vector<at::Tensor>& tensors, int64_t bucket_bytes) {
  all_reduce_sum(tensors, bucket_bytes);
  for (auto& t : tensors) t.div_(size());
}

double ProcessGroup::all_reduce_mean(double value) {
  std::vector<at::Tensor> t = {torch::full({1}, value, torch::kDouble)};
  all_reduce_sum(t);
  return t[0].item<double>() / size();
}

void ProcessGroup::broadcast(std::vector<at::Tensor>& tensors, int root) {
  for (auto& t : tensors) {
    std::vector<at::Tensor> one = {t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    impl_->run("broadcast", [&] { return impl_->pg->broadcast(one, o); });
  }
}

std::vector<at::Tensor> ProcessGroup::all_gather(const at::Tensor& t) {
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < size(); ++r) out[0].push_back(torch::empty_like(t));
  std::vector<at::Tensor> in = {t.contiguous()};
  impl_->run("all-gather", [&] { return impl_->pg->allgather(out, in); });
  return out[0];
}

void ProcessGroup::barrier() {
  // A barrier as a one-element all-reduce: Gloo's barrier takes no timeout of its own.
  std::vector<at::Tensor> t = {torch::zeros({1})};
  impl_->run("barrier", [&] { return impl_->pg->allreduce(t); });
}

}  // namespace iomm
