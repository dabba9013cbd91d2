// Data-parallel processes on torch's own distributed engine, c10d: where a process is in the job (the torchrun and
// Slurm environment contracts), its process group (ProcessGroupGloo on the CPU, ProcessGroupNCCL on CUDA, rendezvous
// through c10d's TCPStore), and the collectives the trainer needs. c10d stays out of this header.
//
// A peer that dies or hangs never hangs the others: every collective has a timeout, and a failed
// one names the ranks whose heartbeat (a store key each rank bumps every second) stopped.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace iomm {

struct DistEnv {
  int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string launcher = "none";  // "torchrun" (or iomm launch), "slurm", or "none"

  // torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; else Slurm's SLURM_PROCID,
  // SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE / SLURM_STEP_TASKS_PER_NODE and the first host of
  // SLURM_JOB_NODELIST (MASTER_PORT or 29500); else one process. Fails naming the variable when one is malformed.
  static DistEnv from_environment();
  bool distributed() const { return world_size > 1; }
  std::string describe() const;  // "rank 1 of 4 (local 1 of 4, torchrun, rendezvous 10.0.0.1:29500)"
};

// The first host of a Slurm node list: "node[003-010,012],gpu7" -> "node003".
std::string first_slurm_host(const std::string& nodelist);

class ProcessGroup {
 public:
  // Joins the job's process group: `device` "cpu" -> Gloo, "cuda..." -> NCCL (a CUDA build only). Waits up to
  // `timeout` for all ranks to arrive; collectives fail after the same timeout.
  static std::unique_ptr<ProcessGroup> join(const DistEnv& env, const std::string& device,
                                            std::chrono::seconds timeout);
  ~ProcessGroup();
  int rank() const;
  int size() const;
  std::string backend() const;  // "gloo" or "nccl"

  // In place, on every rank: the element-wise sum, or the mean. Tensors are flattened into buckets of at most
  // `bucket_bytes` per all-reduce (fewer, larger messages; the gradients of a step go in a handful of calls).
  void all_reduce_sum(std::vector<at::Tensor>& tensors, int64_t bucket_bytes = 25 << 20);
  void all_reduce_mean(std::vector<at::Tensor>& tensors, int64_t bucket_bytes = 25 << 20);
  double all_reduce_mean(double value);
  // An all-reduce (sum, in place) of one contiguous tensor started now and waited for later, so that communication
  // overlaps computation (the gradient buckets during backward). wait() has the group's timeout and error.
  struct Pending;
  std::shared_ptr<Pending> start_all_reduce_sum(const at::Tensor& flat);
  void wait(const std::shared_ptr<Pending>& pending);
  void broadcast(std::vector<at::Tensor>& tensors, int root = 0);
  std::vector<at::Tensor> all_gather(const at::Tensor& t);  // every rank's `t`, by rank
  void barrier();

 private:
  struct Impl;
  explicit ProcessGroup(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace iomm
