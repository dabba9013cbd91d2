// `iomm launch`: N ranks of one command on this node, with torchrun's environment contract (RANK, WORLD_SIZE,
// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). SIGINT/SIGTERM are forwarded to every rank; when one
// rank ends with an error, the others get SIGTERM, then SIGKILL after a grace period, so a dead rank never leaves
// the rest waiting. Across nodes, use torchrun or Slurm (srun): iomm reads both contracts (train/distributed.h).
#pragma once
#include <string>
#include <vector>

namespace iomm {

struct LaunchOptions {
  int nproc = 1;
  std::vector<std::string> command;  // argv of every rank, e.g. {"iomm", "train", "--config", ...}
  std::string master_addr = "127.0.0.1";
  int master_port = 0;     // 0: a free port on this machine
  double grace_s = 10.0;   // from SIGTERM to SIGKILL when stopping the other ranks
};

// Runs the ranks to the end; returns 0 when all exited 0, else the first failed rank's exit code (128 + signal
// when it was killed).
int launch(const LaunchOptions& o);

// A TCP port that is free on this machine now.
int free_tcp_port();

}  // namespace iomm
