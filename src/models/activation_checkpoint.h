// Activation checkpointing, which libtorch's C++ API lacks (torch.utils.checkpoint is Python): a block runs without
// grad in the forward pass and keeps only its inputs; the backward pass runs it again with grad and back-propagates
// through that copy (the reentrant form). Memory: a block's inputs instead of all its activations; compute: one more
// forward of the block. The models apply it per block when asked (MMDiTImpl / ZImageDiTImpl::checkpoint_every), so
// training turns it on and the model code stays the same.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>

namespace iomm {

using TensorFn = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)>;

// fn(inputs), recomputed in backward. Gradients reach the floating-point inputs and every parameter fn uses
// (accumulated into .grad, as the reentrant torch.utils.checkpoint does). Undefined and non-floating inputs (masks)
// pass through. Parameters get their gradients even when no input requires grad. fn must be deterministic (no dropout) and must not keep references to stack variables.
std::vector<at::Tensor> checkpoint(const TensorFn& fn, const std::vector<at::Tensor>& inputs);

// Whether block `index` (counted over all of a model's blocks) is checkpointed: every `every`-th, from the first,
// and only where gradients are being recorded (inference never pays the recompute).
bool checkpoint_block(int64_t every, int64_t index);

}  // namespace iomm
