// Where a process is in the job: the torchrun and Slurm contracts, and Slurm's node-list syntax.
#include "train/distributed.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "core/error.h"

namespace iomm {
namespace {

struct ScopedEnv {
  std::vector<std::string> names;
  void set(const char* k, const char* v) {
    setenv(k, v, 1);
    names.push_back(k);
  }
  ~ScopedEnv() {
    for (auto& n : names) unsetenv(n.c_str());
  }
};

TEST(DistEnv, TorchrunVariablesComeFirst) {
  ScopedEnv e;
  e.set("RANK", "3");
  e.set("WORLD_SIZE", "8");
  e.set("LOCAL_RANK", "1");
  e.set("LOCAL_WORLD_SIZE", "2");
  e.set("MASTER_ADDR", "10.1.2.3");
  e.set("MASTER_PORT", "29511");
  e.set("SLURM_PROCID", "7");  // ignored: torchrun's contract wins
  e.set("SLURM_NTASKS", "16");
  auto d = DistEnv::from_environment();
  EXPECT_EQ(d.launcher, "torchrun");
  EXPECT_EQ(d.rank, 3);
  EXPECT_EQ(d.world_size, 8);
  EXPECT_EQ(d.local_rank, 1);
  EXPECT_EQ(d.local_world_size, 2);
  EXPECT_EQ(d.master_addr, "10.1.2.3");
  EXPECT_EQ(d.master_port, 29511);
  EXPECT_TRUE(d.distributed());
}

TEST(DistEnv, SlurmVariablesAndTheFirstHostOfTheNodeList) {
  ScopedEnv e;
  e.set("SLURM_PROCID", "5");
  e.set("SLURM_NTASKS", "16");
  e.set("SLURM_LOCALID", "1");
  e.set("SLURM_STEP_TASKS_PER_NODE", "4(x4)");
  e.set("SLURM_JOB_NODELIST", "gpu[007-010],cpu1");
  auto d = DistEnv::from_environment();
  EXPECT_EQ(d.launcher, "slurm");
  EXPECT_EQ(d.rank, 5);
  EXPECT_EQ(d.world_size, 16);
  EXPECT_EQ(d.local_rank, 1);
  EXPECT_EQ(d.local_world_size, 4);
  EXPECT_EQ(d.master_addr, "gpu007");
  EXPECT_EQ(d.master_port, 29500);
}

TEST(DistEnv, NoLauncherIsOneProcessAndBadValuesAreNamed) {
  auto d = DistEnv::from_environment();
  EXPECT_EQ(d.world_size, 1);
  EXPECT_FALSE(d.distributed());
  ScopedEnv e;
  e.set("RANK", "two");
  try {
    DistEnv::from_environment();
    FAIL() << "RANK=two accepted";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("RANK"), std::string::npos) << err.what();
  }
  e.set("RANK", "4");
  e.set("WORLD_SIZE", "4");
  EXPECT_THROW(DistEnv::from_environment(), Error);
}

TEST(DistEnv, SlurmNodeLists) {
  EXPECT_EQ(first_slurm_host("node1"), "node1");
  EXPECT_EQ(first_slurm_host("node1,node2"), "node1");
  EXPECT_EQ(first_slurm_host("node[003-010,012],gpu7"), "node003");
  EXPECT_EQ(first_slurm_host("rack[12,14]-gpu"), "rack12-gpu");
}

}  // namespace
}  // namespace iomm
