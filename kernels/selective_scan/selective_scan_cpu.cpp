// Selective scan on CPU.
//
// Work is split into tiles of R consecutive channels of one (batch, group): they share the B and
// C rows, and their R recurrences are independent, so the scalar recurrence loop advances R
// chains at once (instruction-level parallelism instead of one latency-bound chain). Tiles are
// spread over threads with at::parallel_for (OpenMP). The position-wise parts (softplus, exp,
// products, gradient terms) run as plain loops the compiler vectorises. The kernels
// (selective_scan_cpu_kernels.inc) are compiled twice, for AVX2+FMA and portable, and the CPU's
// features pick one at run time.
// Inputs of any float dtype are read as fp32 copies; state, output and gradients accumulate in
// fp32, and gradients are cast back to each input's dtype at the end.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "fast_math_cpu.h"
#include "selective_scan.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define MMVMAMBA_HAVE_FMA_CLONE 1
#else
#define MMVMAMBA_HAVE_FMA_CLONE 0
#endif

namespace mmvmamba {
namespace {

using cpu::fast_exp;
using cpu::fast_softplus;
using cpu::softplus_grad;

// R consecutive channels c0..c0+R-1 of batch b, all in group k. Row j of u/delta/out starts at
// u + j*L; A row j at A + j*N; B, C are the group's (N, L) rows, shared by the tile.
struct Tile {
  const float* u;
  const float* delta;
  const float* A;
  const float* B;
  const float* C;
  const float* D;      // c0-based, or nullptr
  const float* bias;   // c0-based, or nullptr
  int64_t length;
  int64_t state;
};

// Gradient outputs of a tile (fp32). du, ddelta (R, L); dB, dC the tile's contributions summed
// over its R rows (N, L); dA (R, N); dD, dbias (R).
struct TileGrads {
  float* du;
  float* ddelta;
  float* dB;
  float* dC;
  float* dA;
  float* dD;
  float* dbias;
};

#if MMVMAMBA_HAVE_FMA_CLONE
namespace fma {
#define MMVMAMBA_TARGET __attribute__((target("avx2,fma")))
#include "selective_scan_cpu_kernels.inc"
#undef MMVMAMBA_TARGET
}  // namespace fma
#endif

namespace portable {
#define MMVMAMBA_TARGET
#include "selective_scan_cpu_kernels.inc"
#undef MMVMAMBA_TARGET
}  // namespace portable

// Whether to run the AVX2+FMA kernels: when the CPU has them, unless the environment variable
// MMVMAMBA_CPU_KERNELS=portable asks for the portable ones (so tests can cover both).
bool use_fma_kernels() {
#if MMVMAMBA_HAVE_FMA_CLONE
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const char* choice = std::getenv("MMVMAMBA_CPU_KERNELS");
  return supported && !(choice != nullptr && std::string_view(choice) == "portable");
#else
  return false;
#endif
}

// The tile drivers of the kernel set this CPU runs.
template <int R>
void fwd_tile(bool fma_kernels, const Tile& t, bool softplus, float* out, float* scratch) {
#if MMVMAMBA_HAVE_FMA_CLONE
  if (fma_kernels) return fma::scan_fwd_tile<R>(t, softplus, out, scratch);
#endif
  portable::scan_fwd_tile<R>(t, softplus, out, scratch);
}

template <int R>
void bwd_tile(bool fma_kernels, const Tile& t, bool softplus, const float* gy,
              const TileGrads& out, float* scratch) {
#if MMVMAMBA_HAVE_FMA_CLONE
  if (fma_kernels) return fma::scan_bwd_tile<R>(t, softplus, gy, out, scratch);
#endif
  portable::scan_bwd_tile<R>(t, softplus, gy, out, scratch);
}

// ---- tiling and launch -------------------------------------------------------------------------

// fp32 contiguous views of the inputs and the tile geometry.
struct Problem {
  ScanSizes s;
  at::Tensor u, delta, A, B, C, D, bias;  // D / bias undefined when absent
  int rows_per_tile;

  Problem(const at::Tensor& u_, const at::Tensor& delta_, const at::Tensor& A_,
          const at::Tensor& B_, const at::Tensor& C_, const std::optional<at::Tensor>& D_,
          const std::optional<at::Tensor>& bias_)
      : s(check_scan_args(u_, delta_, A_, B_, C_, D_, bias_)),
        u(as_f32(u_)), delta(as_f32(delta_)), A(as_f32(A_)), B(as_f32(B_)), C(as_f32(C_)) {
    if (D_.has_value()) D = as_f32(*D_);
    if (bias_.has_value()) bias = as_f32(*bias_);
    const int64_t per_group = s.channels / s.groups;
    rows_per_tile = per_group % 8 == 0 ? 8 : per_group % 4 == 0 ? 4 : per_group % 2 == 0 ? 2 : 1;
  }

  static at::Tensor as_f32(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

  int64_t num_tiles() const { return s.batch * s.channels / rows_per_tile; }

  // First row (b * channels + c0) of a tile, and the tile's pointers.
  int64_t first_row(int64_t tile) const { return tile * rows_per_tile; }

  Tile tile(int64_t index) const {
    const int64_t row = first_row(index);
    const int64_t b = row / s.channels, c0 = row % s.channels;
    const int64_t k = c0 / (s.channels / s.groups);
    const int64_t bc_offset = (b * s.groups + k) * s.state * s.length;
    return Tile{u.data_ptr<float>() + row * s.length,
                delta.data_ptr<float>() + row * s.length,
                A.data_ptr<float>() + c0 * s.state,
                B.data_ptr<float>() + bc_offset,
                C.data_ptr<float>() + bc_offset,
                D.defined() ? D.data_ptr<float>() + c0 : nullptr,
                bias.defined() ? bias.data_ptr<float>() + c0 : nullptr,
                s.length,
                s.state};
  }

  // Tiles per parallel task: enough work to amortise scheduling.
  int64_t grain() const {
    return std::max<int64_t>(1, 8192 / std::max<int64_t>(1, rows_per_tile * s.length * s.state));
  }
};

// Calls fn.template operator()<R>() with R = p.rows_per_tile as a compile-time constant.
template <typename Fn>
void with_rows_per_tile(const Problem& p, Fn&& fn) {
  switch (p.rows_per_tile) {
    case 8: fn.template operator()<8>(); break;
    case 4: fn.template operator()<4>(); break;
    case 2: fn.template operator()<2>(); break;
    default: fn.template operator()<1>(); break;
  }
}

}  // namespace

at::Tensor selective_scan_fwd_cpu(const at::Tensor& u, const at::Tensor& delta,
                                  const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                  const std::optional<at::Tensor>& D,
                                  const std::optional<at::Tensor>& delta_bias,
                                  bool delta_softplus) {
  const Problem p(u, delta, A, B, C, D, delta_bias);
  const bool fma_kernels = use_fma_kernels();
  const int64_t L = p.s.length;
  at::Tensor out = at::empty({p.s.batch, p.s.channels, L}, u.options().dtype(at::kFloat));
  float* out_ptr = out.data_ptr<float>();
  with_rows_per_tile(p, [&]<int R>() {
    at::parallel_for(0, p.num_tiles(), p.grain(), [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(3 * R * L);
      for (int64_t i = begin; i < end; ++i) {
        fwd_tile<R>(fma_kernels, p.tile(i), delta_softplus, out_ptr + p.first_row(i) * L,
                    scratch.data());
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> selective_scan_fwd_train_cpu(
    const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
    const at::Tensor& C, const std::optional<at::Tensor>& D,
    const std::optional<at::Tensor>& delta_bias, bool delta_softplus) {
  return {selective_scan_fwd_cpu(u, delta, A, B, C, D, delta_bias, delta_softplus),
          at::empty({0}, u.options().dtype(at::kFloat))};
}

ScanGrads selective_scan_bwd_cpu(const at::Tensor& dout, const at::Tensor& u,
                                 const at::Tensor& delta, const at::Tensor& A,
                                 const at::Tensor& B, const at::Tensor& C,
                                 const std::optional<at::Tensor>& D,
                                 const std::optional<at::Tensor>& delta_bias,
                                 bool delta_softplus,
                                 const std::optional<at::Tensor>& states) {
  const Problem p(u, delta, A, B, C, D, delta_bias);
  check_states(states, p.s, u);  // validated, not needed: the CPU kernels recompute states
  TORCH_CHECK(dout.sizes() == u.sizes(), "selective_scan_bwd: dout has shape ", dout.sizes(),
              ", expected the output shape ", u.sizes());
  const at::Tensor gy32 = Problem::as_f32(dout);
  const bool fma_kernels = use_fma_kernels();
  const ScanSizes& s = p.s;
  const int64_t L = s.length, N = s.state;
  const auto f32 = u.options().dtype(at::kFloat);
  at::Tensor du = at::empty({s.batch, s.channels, L}, f32);
  at::Tensor ddelta = at::empty({s.batch, s.channels, L}, f32);
  // Per-tile (dB, dC) and per-row contributions, reduced over a group's tiles / the batch below.
  const int64_t tiles_per_group = s.channels / s.groups / p.rows_per_tile;
  at::Tensor dB_tiles = at::empty({s.batch, s.groups, tiles_per_group, N, L}, f32);
  at::Tensor dC_tiles = at::empty({s.batch, s.groups, tiles_per_group, N, L}, f32);
  at::Tensor dA_rows = at::empty({s.batch, s.channels, N}, f32);
  at::Tensor dD_rows = at::empty({s.batch, s.channels}, f32);
  at::Tensor dbias_rows = at::empty({s.batch, s.channels}, f32);
  const float* gy = gy32.data_ptr<float>();
  with_rows_per_tile(p, [&]<int R>() {
    at::parallel_for(0, p.num_tiles(), p.grain(), [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(4 * R * L + R * (L + 1));
      for (int64_t i = begin; i < end; ++i) {
        const int64_t row = p.first_row(i);
        const TileGrads grads{du.data_ptr<float>() + row * L,
                              ddelta.data_ptr<float>() + row * L,
                              dB_tiles.data_ptr<float>() + i * N * L,
                              dC_tiles.data_ptr<float>() + i * N * L,
                              dA_rows.data_ptr<float>() + row * N,
                              dD_rows.data_ptr<float>() + row,
                              dbias_rows.data_ptr<float>() + row};
        bwd_tile<R>(fma_kernels, p.tile(i), delta_softplus, gy + row * L, grads,
                    scratch.data());
      }
    });
  });
  return {du.to(u.scalar_type()),
          ddelta.to(delta.scalar_type()),
          dA_rows.sum(0),
          dB_tiles.sum(2).to(B.scalar_type()),
          dC_tiles.sum(2).to(C.scalar_type()),
          dD_rows.sum(0),
          dbias_rows.sum(0)};
}

}  // namespace mmvmamba
