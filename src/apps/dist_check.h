// `iomm dist check`: joins the job's process group (train/distributed.h) and checks it: the all-reduce, broadcast,
// all-gather and barrier results every rank must see, then the all-reduce bandwidth. Run it under `iomm launch`,
// torchrun or srun before a long job, to find a broken network or a mis-set environment in seconds.
#pragma once
#include <cstdint>
#include <string>

namespace iomm {

struct DistCheckOptions {
  std::string device = "cpu";
  int64_t rounds = 5;     // timed all-reduce rounds
  double mib = 16;        // all-reduce size
  int64_t timeout_s = 60;
};

// Returns 0 when every check passed (rank 0 prints the report); fails naming the check otherwise.
int dist_check(const DistCheckOptions& o);

}  // namespace iomm
