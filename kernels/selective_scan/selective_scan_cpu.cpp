// Selective scan on CPU.
//
// Work is split into tiles of R consecutive channels of one (batch, group): they share the B and
// C rows, and their R recurrences are independent, so the scalar recurrence loop advances R
// chains at once (instruction-level parallelism instead of one latency-bound chain). Tiles are
// spread over threads with at::parallel_for (OpenMP). The position-wise parts (softplus, exp,
// products, gradient terms) run as plain loops the compiler vectorises (AVX2 clone + fallback).
// Inputs of any float dtype are read as fp32 copies; state, output and gradients accumulate in
// fp32, and gradients are cast back to each input's dtype at the end.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "fast_math_cpu.h"
#include "selective_scan.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// One AVX2 clone and a portable one, picked at load time by the CPU's features.
#define MMVMAMBA_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define MMVMAMBA_MULTIVERSION
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

// ---- position-wise passes over one row (vectorised) -------------------------------------------

// dt[l] = softplus(delta[l] + bias) (or without softplus).
MMVMAMBA_MULTIVERSION
void compute_dt(const float* delta, float bias, bool softplus, int64_t L, float* dt) {
  if (softplus) {
    for (int64_t l = 0; l < L; ++l) dt[l] = fast_softplus(delta[l] + bias);
  } else {
    for (int64_t l = 0; l < L; ++l) dt[l] = delta[l] + bias;
  }
}

// decay[l] = exp(dt[l] * a), drive[l] = dt[l] * Bn[l] * u[l].
MMVMAMBA_MULTIVERSION
void compute_decay_drive(const float* dt, float a, const float* Bn, const float* u, int64_t L,
                         float* decay, float* drive) {
  for (int64_t l = 0; l < L; ++l) {
    decay[l] = fast_exp(dt[l] * a);
    drive[l] = dt[l] * Bn[l] * u[l];
  }
}

// Gradient terms of state n for one row, once states and adjoints are known.
// h_shift[0] = 0 and h_shift[l + 1] = h_l; g[l] is the adjoint of h_l. Adds to du and ddt,
// adds this row's dB, dC contributions to the tile's sums, returns its dA contribution.
MMVMAMBA_MULTIVERSION
float state_grads(const float* gy, const float* u, const float* dt, const float* decay,
                  const float* h_shift, const float* g, float a, const float* Bn, int64_t L,
                  float* du, float* ddt, float* dBn, float* dCn) {
  float dA = 0.0f;
#pragma omp simd reduction(+ : dA)
  for (int64_t l = 0; l < L; ++l) {
    const float g_dt = g[l] * dt[l];
    dCn[l] += gy[l] * h_shift[l + 1];
    dBn[l] += g_dt * u[l];
    du[l] += g_dt * Bn[l];
    const float d_log_decay = g[l] * h_shift[l] * decay[l];  // gradient w.r.t. dt * A
    dA += d_log_decay * dt[l];
    ddt[l] += d_log_decay * a + g[l] * Bn[l] * u[l];
  }
  return dA;
}

// du += D * gy; ddelta = ddt * softplus'(z); writes the row's dD and dbias contributions.
MMVMAMBA_MULTIVERSION
void finish_row(const float* gy, const float* u, const float* delta, float D, float bias,
                bool softplus, const float* ddt, int64_t L, float* du, float* ddelta,
                float* dD_out, float* dbias_out) {
  float dD = 0.0f, dbias = 0.0f;
#pragma omp simd reduction(+ : dD)
  for (int64_t l = 0; l < L; ++l) {
    du[l] += D * gy[l];
    dD += gy[l] * u[l];
  }
  if (softplus) {
#pragma omp simd reduction(+ : dbias)
    for (int64_t l = 0; l < L; ++l) {
      const float dz = ddt[l] * softplus_grad(delta[l] + bias);
      ddelta[l] = dz;
      dbias += dz;
    }
  } else {
#pragma omp simd reduction(+ : dbias)
    for (int64_t l = 0; l < L; ++l) {
      ddelta[l] = ddt[l];
      dbias += ddt[l];
    }
  }
  *dD_out = dD;
  *dbias_out = dbias;
}

// ---- recurrences over R rows at once (rows at stride L) ---------------------------------------

// h_l = decay_l * h_{l-1} + drive_l per row; out_l += C_l * h_l (C shared by the rows).
template <int R>
void recurrence_output(const float* decay, const float* drive, const float* Cn, int64_t L,
                       float* out) {
  float h[R] = {};
  for (int64_t l = 0; l < L; ++l) {
    const float c = Cn[l];
    for (int j = 0; j < R; ++j) {
      h[j] = decay[j * L + l] * h[j] + drive[j * L + l];
      out[j * L + l] += c * h[j];
    }
  }
}

// In place: h_shift[j][1 + l] holds the drive on entry and the state h_l on exit
// (row stride L + 1).
template <int R>
void recurrence_states(const float* decay, int64_t L, float* h_shift) {
  float h[R] = {};
  for (int64_t l = 0; l < L; ++l) {
    for (int j = 0; j < R; ++j) {
      float* hj = h_shift + j * (L + 1) + 1;
      h[j] = decay[j * L + l] * h[j] + hj[l];
      hj[l] = h[j];
    }
  }
}

// Adjoint states, backwards: g_l = gy_l * C_l + decay_{l+1} * g_{l+1}.
template <int R>
void recurrence_adjoint(const float* decay, const float* gy, const float* Cn, int64_t L,
                        float* g) {
  float adj[R] = {};
  float next[R] = {};  // decay_{l+1}, zero past the end
  for (int64_t l = L - 1; l >= 0; --l) {
    const float c = Cn[l];
    for (int j = 0; j < R; ++j) {
      adj[j] = gy[j * L + l] * c + next[j] * adj[j];
      g[j * L + l] = adj[j];
      next[j] = decay[j * L + l];
    }
  }
}

// ---- one tile, forward and backward -----------------------------------------------------------

// Scratch: dt, decay, drive, each (R, L).
template <int R>
void scan_fwd_tile(const Tile& t, bool softplus, float* out, float* scratch) {
  const int64_t L = t.length, N = t.state;
  float* dt = scratch;
  float* decay = dt + R * L;
  float* drive = decay + R * L;
  for (int j = 0; j < R; ++j) {
    compute_dt(t.delta + j * L, t.bias ? t.bias[j] : 0.0f, softplus, L, dt + j * L);
    const float D = t.D ? t.D[j] : 0.0f;
    const float* u = t.u + j * L;
    float* o = out + j * L;
    for (int64_t l = 0; l < L; ++l) o[l] = D * u[l];
  }
  for (int64_t n = 0; n < N; ++n) {
    for (int j = 0; j < R; ++j) {
      compute_decay_drive(dt + j * L, t.A[j * N + n], t.B + n * L, t.u + j * L, L,
                          decay + j * L, drive + j * L);
    }
    recurrence_output<R>(decay, drive, t.C + n * L, L, out);
  }
}

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

// Scratch: dt, ddt, decay, g (R, L each), h_shift (R, L + 1). States of different n are
// independent, so each n recomputes its own decay and states.
template <int R>
void scan_bwd_tile(const Tile& t, bool softplus, const float* gy, const TileGrads& out,
                   float* scratch) {
  const int64_t L = t.length, N = t.state;
  float* dt = scratch;
  float* ddt = dt + R * L;
  float* decay = ddt + R * L;
  float* g = decay + R * L;
  float* h_shift = g + R * L;
  for (int j = 0; j < R; ++j) {
    compute_dt(t.delta + j * L, t.bias ? t.bias[j] : 0.0f, softplus, L, dt + j * L);
    std::fill_n(out.du + j * L, L, 0.0f);
    std::fill_n(ddt + j * L, L, 0.0f);
  }
  for (int64_t n = 0; n < N; ++n) {
    for (int j = 0; j < R; ++j) {
      h_shift[j * (L + 1)] = 0.0f;
      compute_decay_drive(dt + j * L, t.A[j * N + n], t.B + n * L, t.u + j * L, L,
                          decay + j * L, h_shift + j * (L + 1) + 1);
    }
    recurrence_states<R>(decay, L, h_shift);
    recurrence_adjoint<R>(decay, gy, t.C + n * L, L, g);
    std::fill_n(out.dB + n * L, L, 0.0f);
    std::fill_n(out.dC + n * L, L, 0.0f);
    for (int j = 0; j < R; ++j) {
      out.dA[j * N + n] = state_grads(
          gy + j * L, t.u + j * L, dt + j * L, decay + j * L, h_shift + j * (L + 1),
          g + j * L, t.A[j * N + n], t.B + n * L, L, out.du + j * L, ddt + j * L,
          out.dB + n * L, out.dC + n * L);
    }
  }
  for (int j = 0; j < R; ++j) {
    finish_row(gy + j * L, t.u + j * L, t.delta + j * L, t.D ? t.D[j] : 0.0f,
               t.bias ? t.bias[j] : 0.0f, softplus, ddt + j * L, L, out.du + j * L,
               out.ddelta + j * L, out.dD + j, out.dbias + j);
  }
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
  const int64_t L = p.s.length;
  at::Tensor out = at::empty({p.s.batch, p.s.channels, L}, u.options().dtype(at::kFloat));
  float* out_ptr = out.data_ptr<float>();
  with_rows_per_tile(p, [&]<int R>() {
    at::parallel_for(0, p.num_tiles(), p.grain(), [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(3 * R * L);
      for (int64_t i = begin; i < end; ++i) {
        scan_fwd_tile<R>(p.tile(i), delta_softplus, out_ptr + p.first_row(i) * L,
                         scratch.data());
      }
    });
  });
  return out;
}

ScanGrads selective_scan_bwd_cpu(const at::Tensor& dout, const at::Tensor& u,
                                 const at::Tensor& delta, const at::Tensor& A,
                                 const at::Tensor& B, const at::Tensor& C,
                                 const std::optional<at::Tensor>& D,
                                 const std::optional<at::Tensor>& delta_bias,
                                 bool delta_softplus) {
  const Problem p(u, delta, A, B, C, D, delta_bias);
  TORCH_CHECK(dout.sizes() == u.sizes(), "selective_scan_bwd: dout has shape ", dout.sizes(),
              ", expected the output shape ", u.sizes());
  const at::Tensor gy32 = Problem::as_f32(dout);
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
        scan_bwd_tile<R>(p.tile(i), delta_softplus, gy + row * L, grads, scratch.data());
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
