// `iomm launch` (apps/launch.h) and `iomm dist check` (apps/dist_check.h).
#include "apps/dist_check.h"
#include "apps/launch.h"
#include "cli/command.h"

namespace {

iomm::cli::Register launch_reg{{"launch", "Start N ranks of a command on this node (torchrun's environment)",
  [](CLI::App& app) {
    auto o = std::make_shared<iomm::LaunchOptions>();
    app.add_option("--nproc", o->nproc, "ranks to start (one per GPU)")->required()->check(CLI::Range(1, 1024));
    app.add_option("--master-addr", o->master_addr, "rendezvous address");
    app.add_option("--master-port", o->master_port, "rendezvous port (default: a free one)")->check(CLI::Range(0, 65535));
    app.add_option("--grace", o->grace_s, "seconds from SIGTERM to SIGKILL when stopping ranks")->check(CLI::NonNegativeNumber);
    app.add_option("command", o->command, "the command every rank runs, after --")->required()->expected(-1);
    return [o]() -> int { return iomm::launch(*o); };
  }}};

iomm::cli::Register dist_reg{{"dist", "Distributed set-up: check the process group",
  [](CLI::App& app) {
    app.require_subcommand(1);
    auto o = std::make_shared<iomm::DistCheckOptions>();
    CLI::App* c = app.add_subcommand("check", "Join the process group (iomm launch, torchrun or srun) and check "
                                              "all-reduce, broadcast, all-gather, barrier and bandwidth");
    c->add_option("--device", o->device, "cpu (Gloo) or cuda (NCCL)");
    c->add_option("--rounds", o->rounds, "timed all-reduce rounds")->check(CLI::NonNegativeNumber);
    c->add_option("--mib", o->mib, "all-reduce size in MiB")->check(CLI::Range(0.001, 65536.0));
    c->add_option("--timeout", o->timeout_s, "seconds before a missing or hung rank is an error")
        ->check(CLI::Range(1, 86400));
    return [o]() -> int { return iomm::dist_check(*o); };
  }}};

}  // namespace
