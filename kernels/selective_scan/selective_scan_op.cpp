// Registers the selective scan as torch custom ops and defines the Python module mmvmamba._C.
//
//   torch.ops.mmvmamba.selective_scan_fwd(u, delta, A, B, C, D?, delta_bias?, delta_softplus)
//       -> out (B, K*Cg, L) fp32
//   torch.ops.mmvmamba.selective_scan_fwd_train(same arguments)
//       -> (out, states): states are the checkpoints the backward starts from. On CUDA they are
//          the states entering every kStateStride-th position, (N, B, K*Cg, ceil(L / stride))
//          fp32; the CPU backward needs none and returns an empty (0,) tensor.
//   torch.ops.mmvmamba.selective_scan_bwd(dout, u, delta, A, B, C, D?, delta_bias?,
//                                         delta_softplus, states?)
//       -> (du, ddelta, dA, dB, dC, dD, ddelta_bias); dD / ddelta_bias are (K*Cg,) fp32 even
//          when D / delta_bias are absent (the autograd formula drops them then). Without
//          states (or with an empty tensor) the CUDA backward recomputes them.
// Autograd is registered in C++ (selective_scan_autograd.cpp), the fake (meta) implementations
// from Python (mmvmamba/ops/compiled.py).
#include <torch/extension.h>
#include <torch/library.h>

#include "selective_scan.h"
#include "../triton_host/triton_host.h"

#ifndef MMVMAMBA_CUDA_ARCHS
#define MMVMAMBA_CUDA_ARCHS ""
#endif

namespace mmvmamba {

namespace {

bool is_float_type(const at::Tensor& t) {
  const auto dt = t.scalar_type();
  return dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16;
}

void check_vector(const std::optional<at::Tensor>& t, const char* name, int64_t channels,
                  const at::Tensor& u) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->dim() == 1 && t->size(0) == channels, "selective_scan: ", name,
              " must have shape (K*Cg,) = (", channels, ",), got ", t->sizes());
  TORCH_CHECK(t->scalar_type() == at::kFloat, "selective_scan: ", name,
              " must be float32, got ", t->scalar_type());
  TORCH_CHECK(t->device() == u.device(), "selective_scan: ", name, " is on ", t->device(),
              " but u is on ", u.device());
}

}  // namespace

ScanSizes check_scan_args(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                          const at::Tensor& B, const at::Tensor& C,
                          const std::optional<at::Tensor>& D,
                          const std::optional<at::Tensor>& delta_bias) {
  TORCH_CHECK(u.dim() == 3, "selective_scan: u must be (B, K*Cg, L), got shape ", u.sizes());
  TORCH_CHECK(delta.sizes() == u.sizes(), "selective_scan: delta must have u's shape ",
              u.sizes(), ", got ", delta.sizes());
  TORCH_CHECK(B.dim() == 4 && C.sizes() == B.sizes(),
              "selective_scan: B and C must both be (B, K, N, L), got ", B.sizes(), " and ",
              C.sizes());
  const ScanSizes s{u.size(0), u.size(1), u.size(2), B.size(1), B.size(2)};
  TORCH_CHECK(s.length >= 1, "selective_scan: sequence length L must be >= 1, got ", s.length);
  TORCH_CHECK(B.size(0) == s.batch && B.size(3) == s.length, "selective_scan: B is ",
              B.sizes(), " but u is ", u.sizes(), "; expected (", s.batch, ", K, N, ", s.length,
              ")");
  TORCH_CHECK(s.groups >= 1 && s.channels % s.groups == 0, "selective_scan: the ", s.channels,
              " channels of u are not divisible by the K = ", s.groups, " groups of B");
  TORCH_CHECK(s.state >= 1 && s.state <= kMaxState, "selective_scan: state size N must be in "
              "[1, ", kMaxState, "], got ", s.state);
  TORCH_CHECK(A.dim() == 2 && A.size(0) == s.channels && A.size(1) == s.state,
              "selective_scan: A must be (K*Cg, N) = (", s.channels, ", ", s.state, "), got ",
              A.sizes());
  TORCH_CHECK(A.scalar_type() == at::kFloat, "selective_scan: A must be float32, got ",
              A.scalar_type());
  for (const auto* t : {&u, &delta, &B, &C}) {
    TORCH_CHECK(is_float_type(*t), "selective_scan: u, delta, B and C must be float32, "
                "float16 or bfloat16, got ", t->scalar_type());
    TORCH_CHECK(t->device() == u.device(), "selective_scan: all inputs must be on one device;"
                " got ", t->device(), " and ", u.device());
  }
  TORCH_CHECK(A.device() == u.device(), "selective_scan: A is on ", A.device(), " but u is on ",
              u.device());
  check_vector(D, "D", s.channels, u);
  check_vector(delta_bias, "delta_bias", s.channels, u);
  return s;
}

bool check_states(const std::optional<at::Tensor>& states, const ScanSizes& s,
                  const at::Tensor& u) {
  if (!states.has_value() || states->numel() == 0) return false;
  const std::vector<int64_t> expected{s.state, s.batch, s.channels,
                                      num_state_slots(s.length)};
  TORCH_CHECK(states->sizes() == at::IntArrayRef(expected) &&
                  states->scalar_type() == at::kFloat && states->device() == u.device() &&
                  states->is_contiguous(),
              "selective_scan_bwd: states must be the contiguous float32 ",
              at::IntArrayRef(expected), " checkpoints of selective_scan_fwd_train on ",
              u.device(), " (or None), got ", states->scalar_type(), " ", states->sizes(),
              " on ", states->device());
  return true;
}

}  // namespace mmvmamba

TORCH_LIBRARY(mmvmamba, m) {
  m.def("selective_scan_fwd(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, "
        "Tensor? delta_bias, bool delta_softplus) -> Tensor");
  m.def("selective_scan_fwd_train(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, "
        "Tensor? D, Tensor? delta_bias, bool delta_softplus) -> (Tensor, Tensor)");
  m.def("selective_scan_bwd(Tensor dout, Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, "
        "Tensor? D, Tensor? delta_bias, bool delta_softplus, Tensor? states=None) -> (Tensor, "
        "Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mmvmamba, CPU, m) {
  m.impl("selective_scan_fwd", &mmvmamba::selective_scan_fwd_cpu);
  m.impl("selective_scan_fwd_train", &mmvmamba::selective_scan_fwd_train_cpu);
  m.impl("selective_scan_bwd", &mmvmamba::selective_scan_bwd_cpu);
}

namespace {

bool with_cuda() {
#ifdef MMVMAMBA_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmvmamba's compiled ops: the selective scan (registers torch.ops.mmvmamba.*) and "
            "the C++ issue of the Triton ops' eager passes";
  mmvmamba::triton_host::register_functions(m);
  m.def("with_cuda", &with_cuda, "Whether the CUDA kernels were compiled in.");
  m.def("state_stride", []() { return mmvmamba::kStateStride; },
        "Positions between two checkpoints of selective_scan_fwd_train on CUDA.");
  m.def(
      "launch_config",
      [](int64_t rows, int64_t length, int items, int64_t wave_warps) {
        const mmvmamba::LaunchConfig c = mmvmamba::make_config(rows, length, items, wave_warps);
        pybind11::dict d;
        d["tpr"] = c.tpr;
        d["items"] = c.items;
        d["chunk"] = c.chunk;
        d["num_segs"] = c.num_segs;
        d["seg_len"] = c.seg_len;
        d["chunks_per_seg"] = c.chunks_per_seg;
        return d;
      },
      "The CUDA kernels' work split for `rows` rows of `length` positions, `items` positions per "
      "lane and `wave_warps` resident warps (for tests and analysis).");
  m.def("cuda_archs", []() { return std::string(MMVMAMBA_CUDA_ARCHS); },
        "CUDA architectures the kernels were built for ('' for a CPU-only build).");
}
