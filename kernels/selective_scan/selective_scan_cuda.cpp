// Host side of the CUDA selective scan: argument preparation and TORCH_LIBRARY_IMPL(CUDA).
// Compiled only into CUDA builds (MMVMAMBA_WITH_CUDA).
#ifdef MMVMAMBA_WITH_CUDA

#include <ATen/Functions.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>

#include "selective_scan.h"
#include "selective_scan_cuda.cuh"

namespace mmvmamba {
namespace {

int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::kF32;
    case at::kHalf: return cuda::kF16;
    case at::kBFloat16: return cuda::kBF16;
    default: TORCH_CHECK(false, "selective_scan (CUDA): unsupported dtype ", t);
  }
}

bool aligned16(const at::Tensor& t) {
  return reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0;
}

// Contiguous inputs in the dtypes the kernels take: u and delta share one dtype (else both
// fp32); B and C share u's dtype or are both fp32.
struct CudaInputs {
  ScanSizes s;
  at::Tensor u, delta, A, B, C, D, bias;
  int in_dtype, bc_dtype;

  CudaInputs(const at::Tensor& u_, const at::Tensor& delta_, const at::Tensor& A_,
             const at::Tensor& B_, const at::Tensor& C_, const std::optional<at::Tensor>& D_,
             const std::optional<at::Tensor>& bias_)
      : s(check_scan_args(u_, delta_, A_, B_, C_, D_, bias_)) {
    const at::ScalarType in_t =
        u_.scalar_type() == delta_.scalar_type() ? u_.scalar_type() : at::kFloat;
    const at::ScalarType bc_t =
        (B_.scalar_type() == in_t && C_.scalar_type() == in_t) ? in_t : at::kFloat;
    u = u_.to(in_t).contiguous();
    delta = delta_.to(in_t).contiguous();
    B = B_.to(bc_t).contiguous();
    C = C_.to(bc_t).contiguous();
    A = A_.contiguous();
    if (D_.has_value()) D = D_->contiguous();
    if (bias_.has_value()) bias = bias_->contiguous();
    in_dtype = dtype_code(in_t);
    bc_dtype = dtype_code(bc_t);
  }

  // The work split of the forward or backward kernel on the current GPU.
  LaunchConfig config(bool backward) const {
    const int items = backward ? cuda::kBwdItems : cuda::kFwdItems;
    const int tpr = lanes_per_unit(s.length, items);
    const int64_t wave = backward ? cuda::scan_bwd_wave_warps(tpr, in_dtype, bc_dtype)
                                  : cuda::scan_fwd_wave_warps(tpr, in_dtype, bc_dtype);
    return make_config(s.batch * s.channels, s.length, items, wave);
  }

  // Parameters common to both directions, for a work split `cfg`; `scratch` holds the
  // per-segment maps when the rows are cut into segments.
  cuda::ScanParams params(const LaunchConfig& cfg, bool softplus,
                          at::Tensor& scratch) const {
    cuda::ScanParams p{};
    p.u = u.data_ptr();
    p.delta = delta.data_ptr();
    p.A = A.data_ptr<float>();
    p.B = B.data_ptr();
    p.C = C.data_ptr();
    p.D = D.defined() ? D.data_ptr<float>() : nullptr;
    p.bias = bias.defined() ? bias.data_ptr<float>() : nullptr;
    p.batch = s.batch;
    p.channels = s.channels;
    p.length = s.length;
    p.groups = s.groups;
    p.state = s.state;
    p.per_group = s.channels / s.groups;
    p.softplus = softplus;
    p.vec_ok = s.length % 8 == 0 && aligned16(u) && aligned16(delta) && aligned16(B) &&
               aligned16(C);
    p.num_segs = cfg.num_segs;
    p.seg_len = cfg.seg_len;
    p.chunks_per_seg = cfg.chunks_per_seg;
    if (cfg.num_segs > 1) {
      // (N, S, rows, 2): the forward maps (forward) or the adjoint maps (backward).
      scratch = at::empty({s.state * cfg.num_segs * s.batch * s.channels * 2},
                          u.options().dtype(at::kFloat));
      p.seg_maps = scratch.data_ptr<float>();
    }
    return p;
  }

  // The output tensor: (B, K*Cg, L) fp32.
  at::Tensor new_output() const {
    return at::empty({s.batch, s.channels, s.length}, u.options().dtype(at::kFloat));
  }

  // The checkpoints tensor: (N, B, K*Cg, ceil(L / stride)) fp32.
  at::Tensor new_states() const {
    return at::empty({s.state, s.batch, s.channels, num_state_slots(s.length)},
                     u.options().dtype(at::kFloat));
  }

  // Runs the forward kernels: the output into `out` and/or the checkpoints into `states`
  // (either may be undefined, not both).
  void forward(bool softplus, const at::Tensor& out, const at::Tensor& states) const {
    const LaunchConfig cfg = config(/*backward=*/false);
    at::Tensor scratch;
    cuda::ScanParams p = params(cfg, softplus, scratch);
    p.out = out.defined() ? out.data_ptr<float>() : nullptr;
    p.states = states.defined() ? states.data_ptr<float>() : nullptr;
    cuda::launch_scan_fwd(p, cfg, in_dtype, bc_dtype, at::cuda::getCurrentCUDAStream());
  }
};

at::Tensor selective_scan_fwd_cuda(const at::Tensor& u, const at::Tensor& delta,
                                   const at::Tensor& A, const at::Tensor& B,
                                   const at::Tensor& C, const std::optional<at::Tensor>& D,
                                   const std::optional<at::Tensor>& delta_bias,
                                   bool delta_softplus) {
  const c10::cuda::CUDAGuard guard(u.device());
  const CudaInputs in(u, delta, A, B, C, D, delta_bias);
  at::Tensor out = in.new_output();
  in.forward(delta_softplus, out, at::Tensor());
  return out;
}

std::tuple<at::Tensor, at::Tensor> selective_scan_fwd_train_cuda(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
    const at::Tensor& C, const std::optional<at::Tensor>& D,
    const std::optional<at::Tensor>& delta_bias, bool delta_softplus) {
  const c10::cuda::CUDAGuard guard(u.device());
  const CudaInputs in(u, delta, A, B, C, D, delta_bias);
  at::Tensor out = in.new_output();
  at::Tensor states = in.new_states();
  in.forward(delta_softplus, out, states);
  return {out, states};
}

ScanGrads selective_scan_bwd_cuda(const at::Tensor& dout, const at::Tensor& u,
                                  const at::Tensor& delta, const at::Tensor& A,
                                  const at::Tensor& B, const at::Tensor& C,
                                  const std::optional<at::Tensor>& D,
                                  const std::optional<at::Tensor>& delta_bias,
                                  bool delta_softplus,
                                  const std::optional<at::Tensor>& saved_states) {
  const c10::cuda::CUDAGuard guard(u.device());
  const CudaInputs in(u, delta, A, B, C, D, delta_bias);
  TORCH_CHECK(dout.sizes() == u.sizes(), "selective_scan_bwd: dout has shape ", dout.sizes(),
              ", expected the output shape ", u.sizes());
  const ScanSizes& s = in.s;
  at::Tensor states;
  if (check_states(saved_states, s, u)) {
    states = *saved_states;
  } else {
    // No checkpoints from the forward: compute them now.
    states = in.new_states();
    in.forward(delta_softplus, at::Tensor(), states);
  }
  const at::Tensor gy = dout.to(at::kFloat).contiguous();
  const auto f32 = u.options().dtype(at::kFloat);
  at::Tensor du = at::empty({s.batch, s.channels, s.length}, in.u.options());
  at::Tensor ddelta = at::empty({s.batch, s.channels, s.length}, in.u.options());
  // The atomically accumulated gradients, zeroed in one launch.
  at::Tensor dA = at::empty({s.channels, s.state}, f32);
  at::Tensor dB = at::empty({s.batch, s.groups, s.state, s.length}, f32);
  at::Tensor dC = at::empty({s.batch, s.groups, s.state, s.length}, f32);
  at::Tensor dD = at::empty({s.channels}, f32);
  at::Tensor dbias = at::empty({s.channels}, f32);
  at::_foreach_zero_({dA, dB, dC, dD, dbias});
  const int64_t rows = s.batch * s.channels;
  const LaunchConfig cfg = in.config(/*backward=*/true);
  at::Tensor scratch;
  cuda::ScanParams p = in.params(cfg, delta_softplus, scratch);
  at::Tensor du_acc, ddt_acc;
  if (s.state > 1) {
    du_acc = at::empty({rows, s.length}, f32);
    ddt_acc = at::empty({rows, s.length}, f32);
  }
  p.vec_ok = p.vec_ok && aligned16(gy);
  p.states = states.data_ptr<float>();
  p.dout = gy.data_ptr<float>();
  p.du = du.data_ptr();
  p.ddelta = ddelta.data_ptr();
  p.dA = dA.data_ptr<float>();
  p.dB = dB.data_ptr<float>();
  p.dC = dC.data_ptr<float>();
  p.dD = dD.data_ptr<float>();
  p.dbias = dbias.data_ptr<float>();
  p.du_acc = du_acc.defined() ? du_acc.data_ptr<float>() : nullptr;
  p.ddt_acc = ddt_acc.defined() ? ddt_acc.data_ptr<float>() : nullptr;
  cuda::launch_scan_bwd(p, cfg, in.in_dtype, in.bc_dtype, at::cuda::getCurrentCUDAStream());
  // dB and dC back to their inputs' dtypes, in one launch when they share a 16-bit one.
  if (B.scalar_type() == C.scalar_type() && B.scalar_type() != at::kFloat) {
    at::Tensor dB16 = at::empty_like(dB, B.options());
    at::Tensor dC16 = at::empty_like(dC, C.options());
    cuda::launch_cast_pair(dB.data_ptr<float>(), dC.data_ptr<float>(), dB16.data_ptr(),
                           dC16.data_ptr(), dB.numel(), dtype_code(B.scalar_type()),
                           at::cuda::getCurrentCUDAStream());
    dB = dB16;
    dC = dC16;
  } else {
    dB = dB.to(B.scalar_type());
    dC = dC.to(C.scalar_type());
  }
  return {du.to(u.scalar_type()), ddelta.to(delta.scalar_type()), dA, dB, dC, dD, dbias};
}

}  // namespace
}  // namespace mmvmamba

TORCH_LIBRARY_IMPL(mmvmamba, CUDA, m) {
  m.impl("selective_scan_fwd", &mmvmamba::selective_scan_fwd_cuda);
  m.impl("selective_scan_fwd_train", &mmvmamba::selective_scan_fwd_train_cuda);
  m.impl("selective_scan_bwd", &mmvmamba::selective_scan_bwd_cuda);
}

#endif  // MMVMAMBA_WITH_CUDA
