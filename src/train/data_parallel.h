// Data parallelism applied to the training loop (torchtitan's shape: the loop stays one loop, and this object is
// all that differs between 1 and N processes). Each rank computes its slice of every global batch (the stages
// split samples by rank, train/generator_trainer.cpp); then the gradients are averaged across ranks in buckets
// over c10d (train/distributed.h), once per optimizer step however many micro-batches it accumulates, so every
// rank applies the same update to the same weights. Rank 0 logs, samples and writes checkpoints; all ranks read
// a checkpoint on --resume, so a run can continue on another number of processes (the memory pools draw per
// sample; the streaming loader's positions are per rank and need the same world size).
//
// Optional ZeRO-1 (dist.zero1): the optimizer state is sharded across ranks. Every rank still holds the whole
// model and the averaged gradients; it updates only the parameters it owns (whole tensors, balanced by size),
// then each owner broadcasts its updated parameters. A checkpoint gathers the shards into one world-size-free
// optimizer file.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/weights.h"  // NamedTensors

namespace iomm {

class Config;
class ProcessGroup;

struct ParallelConfig {
  int64_t timeout_s = 600;  // dist.timeout_s: a collective waiting longer than this names the missing ranks
  bool zero1 = false;       // dist.zero1: shard the optimizer state across ranks
  bool overlap = true;      // dist.overlap: all-reduce each gradient bucket during backward, as soon as it is complete
  double bucket_mb = 25;    // dist.bucket_mb: the size of a gradient bucket (one all-reduce)

  static ParallelConfig from_config(Config& cfg);
};

class DataParallel {
 public:
  // Joins the job's process group when the environment names several processes (torchrun / Slurm, DistEnv);
  // returns null for a single process, so one-process runs touch no c10d at all.
  static std::unique_ptr<DataParallel> from_environment(const std::string& device, const ParallelConfig& c);
  ~DataParallel();

  int rank() const;
  int world_size() const;
  int local_world_size() const;
  bool zero1() const { return config_.zero1; }
  std::string describe() const;  // "rank 1 of 2 (gloo, ...)"

  // The mean of every parameter's gradient across ranks, in buckets. A parameter without a gradient here takes
  // part as zeros, so all ranks send the same buffers.
  void average_gradients(const NamedTensors& params);

  // The same average, overlapped with backward (dist.overlap; DDP's scheme, on c10d from C++): a hook on each
  // parameter's gradient accumulation counts the parameters of its bucket (buckets in reverse parameter order,
  // roughly the order backward completes them) and starts the bucket's all-reduce once all of them are in. Only
  // the backward after begin_sync() (the step's last micro-batch) communicates. finish_gradients() starts the
  // buckets that never completed (a parameter without a gradient takes part as zeros), waits for all and writes
  // the means into the gradients. Buckets start in index order on every rank, as collectives must.
  bool overlaps() const { return config_.overlap; }
  void attach_gradient_hooks(const NamedTensors& params);
  void begin_sync();
  void finish_gradients();
  double mean(double v);
  void sum(std::vector<double>& values);  // in place, element-wise across ranks
  void broadcast_parameters(const NamedTensors& params, int root = 0);
  std::vector<std::string> gather_strings(const std::string& s);  // every rank's, by rank
  void barrier();

  // ZeRO-1: which rank updates parameter i (greedy by size, the same on every rank), and the broadcast of the
  // updated parameters from their owners.
  std::vector<int> owners(const NamedTensors& params) const;
  void broadcast_from_owners(const NamedTensors& params, const std::vector<int>& owners);

 private:
  DataParallel(std::unique_ptr<ProcessGroup> pg, ParallelConfig c, int local_world_size);
  struct Buckets;
  void gradient_ready(size_t param);
  void start_bucket(size_t b);
  std::unique_ptr<ProcessGroup> pg_;
  std::unique_ptr<Buckets> buckets_;
  ParallelConfig config_;
  int local_world_size_ = 1;
};

// The data position a checkpoint records for a run of `world` ranks: the single rank's own state, or
// {"world_size": W, "ranks": [...]} (null when no rank has one, e.g. the memory pools).
nlohmann::json combine_data_states(const std::vector<std::string>& per_rank);
// This rank's part of a recorded data position; fails naming `where` and the fix when the streams' positions
// were recorded for another number of ranks.
nlohmann::json data_state_for_rank(const nlohmann::json& saved, int rank, int world, const std::string& where);
// Rank 0's metrics fields with the skip counts (data_skipped) summed over all ranks.
nlohmann::json combine_data_metrics(const std::vector<std::string>& per_rank);

}  // namespace iomm
