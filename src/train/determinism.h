// Deterministic training, so that a resumed run reproduces an uninterrupted one bit for bit.
//
// What decides reproducibility:
// - at::globalContext().deterministicAlgorithms(): ops with a nondeterministic kernel (mostly CUDA atomics:
//   index_add, scatter_add, embedding backward, ...) switch to a deterministic one or throw.
// - cuDNN autotuning picks kernels by timing, which differs run to run; off in deterministic mode.
// - cuBLAS needs CUBLAS_WORKSPACE_CONFIG=:4096:8 (set here when unset; it only takes effect before the first
//   cuBLAS call of the process, so call set_deterministic first thing).
// - CPU: torch's reductions and GEMMs (MKL / OpenBLAS) split the work by the intra-op thread count, and floating
//   point addition is not associative, so results are reproducible only for the same thread count (and the same
//   torch / BLAS build). determinism_fingerprint() records these; a resume compares them and warns.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace iomm {

void set_deterministic(bool on);

// {"deterministic", "intra_op_threads", "torch", "cuda_devices"}: store it in the checkpoint's trainer state.
nlohmann::json determinism_fingerprint();
// What differs between a stored fingerprint and this process, one sentence each (empty when nothing does).
std::vector<std::string> determinism_mismatches(const nlohmann::json& saved);
// Logs each mismatch as a warning: the resumed run is valid but will not match an uninterrupted one bit for bit.
void warn_determinism_mismatches(const nlohmann::json& saved, const std::string& source);

}  // namespace iomm
