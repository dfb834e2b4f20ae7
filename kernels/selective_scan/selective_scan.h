// mmvmamba selective scan: declarations shared by the op registration, the CPU and the CUDA code.
//
// Semantics (VMamba spec, SS2D step 7), per batch b, channel c in group k = c / Cg, state n:
//   dt_l = softplus(delta_l + delta_bias_c)            (softplus optional, threshold 20)
//   h_l  = exp(dt_l * A_cn) * h_{l-1} + dt_l * B_kn,l * u_l,   h_{-1} = 0
//   y_l  = sum_n C_kn,l * h_l + D_c * u_l
// Layouts: u, delta (B, K*Cg, L); A (K*Cg, N) fp32; B, C (B, K, N, L); D, delta_bias (K*Cg,) fp32.
// State and output are fp32 whatever the input dtype.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "scan_layout.h"

namespace mmvmamba {

constexpr int kMaxState = 16;

// Sizes of one call, checked once by check_scan_args.
struct ScanSizes {
  int64_t batch;
  int64_t channels;   // K * Cg
  int64_t length;     // L
  int64_t groups;     // K
  int64_t state;      // N
};

// Validates shapes, dtypes and devices; throws a c10::Error naming the offending argument.
ScanSizes check_scan_args(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                          const at::Tensor& B, const at::Tensor& C,
                          const std::optional<at::Tensor>& D,
                          const std::optional<at::Tensor>& delta_bias);

// Whether `states` (given to the backward) is empty, i.e. absent; if not, checks that it has the
// checkpoint layout of selective_scan_fwd_train on CUDA, (N, B, K*Cg, ceil(L / kStateStride))
// contiguous fp32 on u's device, and throws a c10::Error saying what differs otherwise.
bool check_states(const std::optional<at::Tensor>& states, const ScanSizes& s,
                  const at::Tensor& u);

using ScanGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                             at::Tensor, at::Tensor>;

at::Tensor selective_scan_fwd_cpu(const at::Tensor& u, const at::Tensor& delta,
                                  const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                  const std::optional<at::Tensor>& D,
                                  const std::optional<at::Tensor>& delta_bias,
                                  bool delta_softplus);

// The CPU forward for training: the output and an empty checkpoints tensor (the CPU backward
// recomputes what it needs).
std::tuple<at::Tensor, at::Tensor> selective_scan_fwd_train_cpu(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
    const at::Tensor& C, const std::optional<at::Tensor>& D,
    const std::optional<at::Tensor>& delta_bias, bool delta_softplus);

// `states` (checkpoints in the CUDA layout, or empty) is checked and not needed.
ScanGrads selective_scan_bwd_cpu(const at::Tensor& dout, const at::Tensor& u,
                                 const at::Tensor& delta, const at::Tensor& A,
                                 const at::Tensor& B, const at::Tensor& C,
                                 const std::optional<at::Tensor>& D,
                                 const std::optional<at::Tensor>& delta_bias,
                                 bool delta_softplus, const std::optional<at::Tensor>& states);

}  // namespace mmvmamba
