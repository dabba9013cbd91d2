#include "apps/launch.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/error.h"

namespace iomm {

namespace {

std::atomic<int> g_signal{0};
void on_signal(int sig) { g_signal = sig; }

pid_t start_rank(const LaunchOptions& o, int rank, int port) {
  pid_t pid = fork();
  if (pid < 0) fail("iomm launch: fork failed: {}", std::strerror(errno));
  if (pid > 0) return pid;
  auto set = [](const char* k, const std::string& v) { setenv(k, v.c_str(), 1); };
  set("RANK", std::to_string(rank));
  set("LOCAL_RANK", std::to_string(rank));
  set("WORLD_SIZE", std::to_string(o.nproc));
  set("LOCAL_WORLD_SIZE", std::to_string(o.nproc));
  set("MASTER_ADDR", o.master_addr);
  set("MASTER_PORT", std::to_string(port));
  std::vector<char*> argv;
  for (const auto& a : o.command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execvp(argv[0], argv.data());
  std::fprintf(stderr, "iomm launch: cannot run '%s': %s\n", argv[0], std::strerror(errno));
  _exit(127);
}

std::string describe_status(int status) {
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return fmt::format("exited with code {}", WEXITSTATUS(status));
}

int exit_code(int status) { return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status); }

// SIGTERM to the ranks still running, SIGKILL after the grace period; reaps them all.
void stop_all(std::vector<pid_t>& pids, double grace_s) {
  for (pid_t p : pids)
    if (p > 0) kill(p, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace_s);
  for (auto& p : pids) {
    while (p > 0) {
      int st = 0;
      if (waitpid(p, &st, WNOHANG) == p) p = 0;
      else if (std::chrono::steady_clock::now() > deadline) kill(p, SIGKILL), waitpid(p, &st, 0), p = 0;
      else std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

}  // namespace

int free_tcp_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    fail("iomm launch: cannot find a free TCP port: {}; pass --master-port", std::strerror(errno));
  close(fd);
  return ntohs(a.sin_port);
}

int launch(const LaunchOptions& o) {
  if (o.nproc < 1) fail("iomm launch: --nproc must be >= 1, got {}", o.nproc);
  if (o.command.empty()) fail("iomm launch: no command; usage: iomm launch --nproc N -- iomm train ...");
  const int port = o.master_port > 0 ? o.master_port : free_tcp_port();
  spdlog::info("launch: {} ranks of '{}', rendezvous {}:{}", o.nproc, o.command[0], o.master_addr, port);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::vector<pid_t> pids;
  for (int r = 0; r < o.nproc; ++r) pids.push_back(start_rank(o, r, port));
  int running = o.nproc, result = 0;
  while (running > 0) {
    if (int sig = g_signal.exchange(0)) {
      spdlog::warn("launch: got signal {}, forwarding it to every rank", sig);
      for (pid_t p : pids)
        if (p > 0) kill(p, sig);
    }
    int st = 0;
    pid_t done = waitpid(-1, &st, WNOHANG);
    if (done <= 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    int rank = int(std::find(pids.begin(), pids.end(), done) - pids.begin());
    if (rank >= o.nproc) continue;
    pids[size_t(rank)] = 0;
    --running;
    if (exit_code(st) == 0) continue;
    spdlog::error("launch: rank {} (pid {}) {}; stopping the other {} rank(s)", rank, done, describe_status(st),
                  running);
    if (result == 0) result = exit_code(st);
    stop_all(pids, o.grace_s);
    running = 0;
  }
  return result;
}

}  // namespace iomm
