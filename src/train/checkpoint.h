// Training checkpoints that a crash cannot corrupt, and resume that continues bit-exactly.
//
// Layout (docs/checkpoints.md has the full story):
//   RUN/checkpoints/step-00000123/<stem>.safetensors   one file per stem: "model", "ema", "optimizer", "rng", ...
//   RUN/checkpoints/step-00000123/state.json           {"format", "version", "step", "state": <trainer state>}
//   RUN/checkpoints/step-00000123/COMPLETE             written last: the step and every file's size
//   RUN/checkpoints/latest                             the name of the newest checkpoint dir, for people and tools
// A checkpoint is written into `step-00000123.tmp`, made durable, then renamed into place, so a directory named
// `step-N` is always whole. Only one process (rank 0) may save into a run at a time.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

namespace iomm {

struct TrainCheckpoint {
  int64_t step = 0;                                                // optimizer steps done
  std::map<std::string, std::map<std::string, at::Tensor>> files;  // stem -> named tensors
  nlohmann::json state = nlohmann::json::object();                 // trainer state: data cursor, seeds, fingerprint...
};

// "step-00000123"
std::string checkpoint_dir_name(int64_t step);

// Saves `ck` as RUN/checkpoints/step-N (see above), updates RUN/checkpoints/latest, and deletes older complete
// checkpoints so that `keep_last` remain (the new one always stays; keep_last <= 0 keeps all). With keep_last >= 2
// the ones to delete go before the new one is written (peak disk: keep_last checkpoints, and the newest complete one
// is never touched); with keep_last = 1 after it (peak: two). Complete checkpoints
// with a step above ck.step (a run resumed from an earlier checkpoint) are renamed `step-N.superseded`, never
// deleted, so the next resume cannot jump back into the abandoned continuation. Returns the new checkpoint's path.
std::string save_checkpoint(const std::string& run_dir, const TrainCheckpoint& ck, int keep_last = 2);

// Logs, before the first save, what checkpoints of about `checkpoint_bytes` need on disk with `keep_last` and
// `saves_left` saves to come, and what is free (statvfs of RUN/checkpoints); warns when a later save cannot fit and
// fails (naming the directory, both sizes and the fix) when not even one fits. Returns the bytes needed at the peak.
uint64_t check_checkpoint_space(const std::string& run_dir, uint64_t checkpoint_bytes, int keep_last,
                                int64_t saves_left);

// The complete checkpoint with the highest step in RUN/checkpoints, or nullopt when there is none. Leftover temp
// dirs (a save that was killed) and dirs without COMPLETE (e.g. a partial copy) are skipped with a warning.
std::optional<std::string> latest_checkpoint(const std::string& run_dir);

// Loads a checkpoint dir. Fails naming the file and the fix when COMPLETE, state.json or a tensor file is missing,
// truncated, corrupt, or from another step.
TrainCheckpoint load_checkpoint(const std::string& checkpoint_dir);

// A generator's state (CPU: the Mersenne Twister state and the cached normal samples; CUDA: seed and Philox offset)
// as a uint8 CPU tensor, and back. `g` is locked while its state is read or set.
at::Tensor generator_state(const at::Generator& g);
void set_generator_state(at::Generator& g, const at::Tensor& state, const std::string& source = "generator state");

}  // namespace iomm
