#include "models/activation_checkpoint.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

namespace iomm {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The autocast state of the forward pass, replayed in the recompute (which runs in backward, outside any autocast
// scope): without it a block that ran in bf16 would recompute in fp32, or fail on mixed dtypes.
struct AutocastState {
  bool cpu = false, cuda = false;
  c10::ScalarType cpu_dtype = c10::ScalarType::BFloat16, cuda_dtype = c10::ScalarType::Half;

  static AutocastState current() {
    return {at::autocast::is_autocast_enabled(c10::DeviceType::CPU),
            at::autocast::is_autocast_enabled(c10::DeviceType::CUDA),
            at::autocast::get_autocast_dtype(c10::DeviceType::CPU),
            at::autocast::get_autocast_dtype(c10::DeviceType::CUDA)};
  }
  void apply() const {
    at::autocast::set_autocast_enabled(c10::DeviceType::CPU, cpu);
    at::autocast::set_autocast_enabled(c10::DeviceType::CUDA, cuda);
    at::autocast::set_autocast_dtype(c10::DeviceType::CPU, cpu_dtype);
    at::autocast::set_autocast_dtype(c10::DeviceType::CUDA, cuda_dtype);
  }
};

// The block's function and autocast state travel to backward inside the context (saved_data holds IValues, so they
// go as a capsule).
struct FnHolder : torch::CustomClassHolder {
  FnHolder(TensorFn f, AutocastState a) : fn(std::move(f)), autocast(a) {}
  TensorFn fn;
  AutocastState autocast;
};

// Runs fn under the forward's autocast state and restores the caller's afterwards.
std::vector<at::Tensor> replay(const TensorFn& fn, const std::vector<at::Tensor>& inputs, const AutocastState& s) {
  auto outer = AutocastState::current();
  s.apply();
  struct Restore {
    const AutocastState& o;
    ~Restore() { o.apply(); }
  } restore{outer};
  return fn(inputs);
}

struct CheckpointFunction : torch::autograd::Function<CheckpointFunction> {
  // Runs without grad (Function::apply's forward always does): only the inputs are kept.
  // `inputs` must arrive as a TensorList: a std::vector would match Function's catch-all and count as one
  // non-tensor argument, leaving the outputs without a gradient edge.
  static variable_list forward(AutogradContext* ctx, const TensorFn& fn, at::TensorList inputs) {
    ctx->saved_data["fn"] = c10::IValue::make_capsule(c10::make_intrusive<FnHolder>(fn, AutocastState::current()));
    ctx->save_for_backward(inputs.vec());
    return fn(inputs.vec());
  }

  // Returns one gradient per forward argument: none for fn, then one per input.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto holder = c10::static_intrusive_pointer_cast<FnHolder>(ctx->saved_data["fn"].toCapsule());
    auto saved = ctx->get_saved_variables();
    std::vector<at::Tensor> inputs;
    for (auto& t : saved)
      inputs.push_back(t.defined() && t.is_floating_point() ? t.detach().requires_grad_(true) : t);
    variable_list outputs;
    {
      torch::AutoGradMode grad_on(true);
      outputs = replay(holder->fn, inputs, holder->autocast);
    }
    variable_list roots, root_grads;
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!outputs[i].requires_grad()) continue;
      roots.push_back(outputs[i]);
      root_grads.push_back(grads[i].defined() ? grads[i] : torch::zeros_like(outputs[i]));
    }
    if (!roots.empty()) torch::autograd::backward(roots, root_grads);
    variable_list out = {at::Tensor()};
    for (auto& t : inputs) out.push_back(t.defined() && t.requires_grad() ? t.grad() : at::Tensor());
    return out;
  }
};

}  // namespace

std::vector<at::Tensor> checkpoint(const TensorFn& fn, const std::vector<at::Tensor>& inputs) {
  if (!torch::GradMode::is_enabled()) return fn(inputs);
  // Function::apply needs defined tensors (it records each input's device): undefined ones (an absent mask) stay
  // outside and are put back in their places for fn.
  std::vector<size_t> where;
  std::vector<at::Tensor> defined;
  bool any = false;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) continue;
    where.push_back(i);
    defined.push_back(inputs[i]);
    any |= inputs[i].requires_grad();
  }
  // The engine reaches this node only through an input that requires grad; without one, fn's parameters would get
  // no gradient (the reentrant torch.utils.checkpoint's pitfall). An empty input that requires grad fixes it.
  if (!any) defined.push_back(torch::empty({0}, torch::requires_grad()));
  size_t n = inputs.size();
  TensorFn placed = [fn, where, n](const std::vector<at::Tensor>& d) {
    std::vector<at::Tensor> full(n);
    for (size_t k = 0; k < where.size(); ++k) full[where[k]] = d[k];
    return fn(full);
  };
  return CheckpointFunction::apply(placed, at::TensorList(defined));
}

bool checkpoint_block(int64_t every, int64_t index) {
  return every > 0 && index % every == 0 && torch::GradMode::is_enabled();
}

}  // namespace iomm
