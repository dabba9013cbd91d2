#include "apps/dist_check.h"

#include <chrono>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "core/error.h"
#include "train/distributed.h"

namespace iomm {

namespace {

void expect(bool ok, int rank, const std::string& what) {
  if (!ok) fail("dist check: rank {}: {} gave a wrong result: the backend or the network is broken", rank, what);
}

void check_collectives(ProcessGroup& pg, const std::string& device) {
  const int r = pg.rank(), w = pg.size();
  auto opt = torch::TensorOptions().device(device);
  std::vector<at::Tensor> t = {torch::full({1000}, float(r + 1), opt), torch::full({7}, double(r), opt.dtype(torch::kDouble))};
  pg.all_reduce_sum(t, 1024);  // two buckets
  expect(t[0].eq(float(w * (w + 1) / 2)).all().item<bool>(), r, "all-reduce (float)");
  expect(t[1].eq(double(w * (w - 1) / 2)).all().item<bool>(), r, "all-reduce (double, second bucket)");
  std::vector<at::Tensor> b = {torch::full({5}, float(r == 0 ? 42 : -1), opt)};
  pg.broadcast(b, 0);
  expect(b[0].eq(42.f).all().item<bool>(), r, "broadcast");
  auto g = pg.all_gather(torch::full({3}, float(r), opt));
  for (int k = 0; k < w; ++k) expect(g[size_t(k)].eq(float(k)).all().item<bool>(), r, "all-gather");
  pg.barrier();
}

}  // namespace

int dist_check(const DistCheckOptions& o) {
  auto env = DistEnv::from_environment();
  spdlog::info("dist check: {}", env.describe());
  // One GPU per local rank.
  const std::string device = o.device == "cuda" ? fmt::format("cuda:{}", env.local_rank) : o.device;
  auto pg = ProcessGroup::join(env, device, std::chrono::seconds(o.timeout_s));
  check_collectives(*pg, device);
  std::vector<at::Tensor> big = {torch::ones({int64_t(o.mib * (1 << 20) / 4)}, torch::TensorOptions().device(device))};
  pg->all_reduce_sum(big);  // warm-up
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < o.rounds; ++i) pg->all_reduce_sum(big, int64_t(o.mib * (1 << 20)));
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / double(std::max<int64_t>(1, o.rounds));
  // Bus bandwidth as nccl-tests defines it for all-reduce: size × 2(n−1)/n per second.
  double busbw = o.mib / 1024.0 * 2.0 * (pg->size() - 1) / pg->size() / s;
  if (pg->rank() == 0)
    spdlog::info("dist check: {} ranks, {}: all-reduce, broadcast, all-gather, barrier correct; all-reduce of {} MiB "
                 "in {:.2f} ms ({:.2f} GiB/s bus bandwidth)",
                 pg->size(), pg->backend(), o.mib, s * 1e3, busbw);
  return 0;
}

}  // namespace iomm
