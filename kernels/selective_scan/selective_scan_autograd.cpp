// Autograd for mmvmamba::selective_scan_fwd, registered for the Autograd dispatch key in C++.
//
// A C++ autograd kernel costs a few microseconds per call; the Python route
// (torch.library.register_autograd) cost several hundred microseconds per forward+backward,
// which dominated small and medium scans on the GPU. When a gradient is needed the forward runs
// mmvmamba::selective_scan_fwd_train, which also returns the checkpoints the backward starts
// from; otherwise it runs the plain forward. The backward calls mmvmamba::selective_scan_bwd
// through the dispatcher, so it runs on the inputs' device; it is not itself differentiable (no
// double backward).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>

namespace mmvmamba {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using FwdSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                const at::Tensor&, const at::Tensor&,
                                const std::optional<at::Tensor>&,
                                const std::optional<at::Tensor>&, bool);
using FwdTrainSignature = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, bool);
using BwdSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&, bool, const std::optional<at::Tensor>&);

std::optional<at::Tensor> as_optional(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

class SelectiveScanFunction : public torch::autograd::Function<SelectiveScanFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& u, const at::Tensor& delta,
                            const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                            const std::optional<at::Tensor>& D,
                            const std::optional<at::Tensor>& delta_bias, bool delta_softplus) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("mmvmamba::selective_scan_fwd_train", "")
                               .typed<FwdTrainSignature>();
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, states] = op.call(u, delta, A, B, C, D, delta_bias, delta_softplus);
    ctx->save_for_backward({u, delta, A, B, C, D.value_or(at::Tensor()),
                            delta_bias.value_or(at::Tensor()), states});
    ctx->saved_data["delta_softplus"] = delta_softplus;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("mmvmamba::selective_scan_bwd", "")
                               .typed<BwdSignature>();
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& u = saved[0];
    const std::optional<at::Tensor> D = as_optional(saved[5]);
    const std::optional<at::Tensor> delta_bias = as_optional(saved[6]);
    at::Tensor dout = grad_outputs[0];
    if (!dout.defined()) dout = at::zeros(u.sizes(), u.options().dtype(at::kFloat));
    auto [du, ddelta, dA, dB, dC, dD, dbias] =
        op.call(dout, u, saved[1], saved[2], saved[3], saved[4], D, delta_bias,
                ctx->saved_data["delta_softplus"].toBool(), saved[7]);
    return {du, ddelta, dA, dB, dC, D ? dD : at::Tensor(), delta_bias ? dbias : at::Tensor(),
            at::Tensor()};
  }
};

at::Tensor selective_scan_fwd_autograd(const at::Tensor& u, const at::Tensor& delta,
                                       const at::Tensor& A, const at::Tensor& B,
                                       const at::Tensor& C, const std::optional<at::Tensor>& D,
                                       const std::optional<at::Tensor>& delta_bias,
                                       bool delta_softplus) {
  const auto requires_grad = [](const std::optional<at::Tensor>& t) {
    return t.has_value() && t->requires_grad();
  };
  const bool needs_grad =
      at::GradMode::is_enabled() &&
      (u.requires_grad() || delta.requires_grad() || A.requires_grad() || B.requires_grad() ||
       C.requires_grad() || requires_grad(D) || requires_grad(delta_bias));
  if (needs_grad) {
    return SelectiveScanFunction::apply(u, delta, A, B, C, D, delta_bias, delta_softplus);
  }
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("mmvmamba::selective_scan_fwd", "")
                             .typed<FwdSignature>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(u, delta, A, B, C, D, delta_bias, delta_softplus);
}

}  // namespace
}  // namespace mmvmamba

TORCH_LIBRARY_IMPL(mmvmamba, Autograd, m) {
  m.impl("selective_scan_fwd", &mmvmamba::selective_scan_fwd_autograd);
}
