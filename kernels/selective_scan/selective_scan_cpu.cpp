// Selective scan on CPU: one (batch, channel) row per task, rows spread over threads with
// at::parallel_for (OpenMP). Inside a row the position-wise parts (softplus, exp, products) run
// as plain loops the compiler vectorises; only the recurrence itself is a scalar loop.
// Inputs of any float dtype are read as fp32 copies; state, output and gradients accumulate in
// fp32 and gradients are cast back to each input's dtype at the end.
#include <ATen/Parallel.h>

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

// Pointers and sizes of one (batch b, channel c) row; B and C rows belong to group c / Cg.
struct Row {
  const float* u;        // (L)
  const float* delta;    // (L)
  const float* A;        // (N)
  const float* B;        // (N, L), row stride L
  const float* C;        // (N, L)
  float D;
  float bias;
  int64_t length;
  int64_t state;
};

// dt[l] = softplus(delta[l] + bias) (or without softplus).
MMVMAMBA_MULTIVERSION
void compute_dt(const Row& r, bool softplus, float* dt) {
  const int64_t L = r.length;
  if (softplus) {
    for (int64_t l = 0; l < L; ++l) dt[l] = fast_softplus(r.delta[l] + r.bias);
  } else {
    for (int64_t l = 0; l < L; ++l) dt[l] = r.delta[l] + r.bias;
  }
}

// decay[l] = exp(dt[l] * A_n), drive[l] = dt[l] * B_n[l] * u[l].
MMVMAMBA_MULTIVERSION
void compute_decay_drive(const Row& r, int64_t n, const float* dt, float* decay, float* drive) {
  const int64_t L = r.length;
  const float a = r.A[n];
  const float* Bn = r.B + n * L;
  for (int64_t l = 0; l < L; ++l) {
    decay[l] = fast_exp(dt[l] * a);
    drive[l] = dt[l] * Bn[l] * r.u[l];
  }
}

void scan_fwd_row(const Row& r, bool softplus, float* out, float* dt, float* decay,
                  float* drive) {
  const int64_t L = r.length;
  compute_dt(r, softplus, dt);
  for (int64_t l = 0; l < L; ++l) out[l] = r.D * r.u[l];
  for (int64_t n = 0; n < r.state; ++n) {
    compute_decay_drive(r, n, dt, decay, drive);
    const float* Cn = r.C + n * L;
    float h = 0.0f;
    for (int64_t l = 0; l < L; ++l) {
      h = decay[l] * h + drive[l];
      out[l] += Cn[l] * h;
    }
  }
}

// Gradient outputs of one row (all fp32): du, ddelta (L); dB, dC (N, L) for this channel;
// dA (N); dD and dbias scalars.
struct RowGrads {
  float* du;
  float* ddelta;
  float* dB;
  float* dC;
  float* dA;
  float* dD;
  float* dbias;
};

// Adjoint contributions of state n once the adjoint states g[l] are known.
// h_shift[0] = 0 and h_shift[l + 1] = h_l, so that h_shift[l] is the state before step l.
MMVMAMBA_MULTIVERSION
float accumulate_state_grads(const Row& r, int64_t n, const float* gy, const float* dt,
                             const float* decay, const float* h_shift, const float* g,
                             float* ddt, const RowGrads& out) {
  const int64_t L = r.length;
  const float a = r.A[n];
  const float* Bn = r.B + n * L;
  float* dBn = out.dB + n * L;
  float* dCn = out.dC + n * L;
  float* du = out.du;
  const float* u = r.u;
  float dA = 0.0f;
#pragma omp simd reduction(+ : dA)
  for (int64_t l = 0; l < L; ++l) {
    const float g_dt = g[l] * dt[l];
    dCn[l] = gy[l] * h_shift[l + 1];
    dBn[l] = g_dt * u[l];
    du[l] += g_dt * Bn[l];
    const float d_log_decay = g[l] * h_shift[l] * decay[l];  // gradient w.r.t. dt * A
    dA += d_log_decay * dt[l];
    ddt[l] += d_log_decay * a + g[l] * Bn[l] * u[l];
  }
  return dA;
}

MMVMAMBA_MULTIVERSION
void finish_row(const Row& r, bool softplus, const float* gy, const float* ddt,
                const RowGrads& out) {
  const int64_t L = r.length;
  const float *u = r.u, *delta = r.delta;
  const float D = r.D, bias = r.bias;
  float *du = out.du, *ddelta = out.ddelta;
  float dD = 0.0f, dbias = 0.0f;
#pragma omp simd reduction(+ : dD, dbias)
  for (int64_t l = 0; l < L; ++l) {
    du[l] += D * gy[l];
    dD += gy[l] * u[l];
    const float dz = softplus ? ddt[l] * softplus_grad(delta[l] + bias) : ddt[l];
    ddelta[l] = dz;
    dbias += dz;
  }
  *out.dD = dD;
  *out.dbias = dbias;
}

// Buffers: dt (L), g (L), ddt (L), decay (N*L), h (N*(L+1)).
void scan_bwd_row(const Row& r, bool softplus, const float* gy, const RowGrads& out,
                  float* dt, float* decay, float* h, float* g, float* ddt) {
  const int64_t L = r.length, N = r.state;
  compute_dt(r, softplus, dt);
  for (int64_t l = 0; l < L; ++l) {
    out.du[l] = 0.0f;
    ddt[l] = 0.0f;
  }
  for (int64_t n = 0; n < N; ++n) {
    float* decay_n = decay + n * L;
    float* h_shift = h + n * (L + 1);
    h_shift[0] = 0.0f;
    compute_decay_drive(r, n, dt, decay_n, h_shift + 1);  // the drive, turned into states
    float state = 0.0f;
    for (int64_t l = 0; l < L; ++l) {
      state = decay_n[l] * state + h_shift[l + 1];
      h_shift[l + 1] = state;
    }
    // Adjoint recurrence: g_l = gy_l * C_l + decay_{l+1} * g_{l+1}.
    const float* Cn = r.C + n * L;
    float adj = 0.0f;
    for (int64_t l = L - 1; l >= 0; --l) {
      const float next_decay = l + 1 < L ? decay_n[l + 1] : 0.0f;
      adj = gy[l] * Cn[l] + next_decay * adj;
      g[l] = adj;
    }
    out.dA[n] = accumulate_state_grads(r, n, gy, dt, decay_n, h_shift, g, ddt, out);
  }
  finish_row(r, softplus, gy, ddt, out);
}

// Shared row bookkeeping of forward and backward.
struct RowIndexer {
  ScanSizes s;
  const float* u;
  const float* delta;
  const float* A;
  const float* B;
  const float* C;
  const float* D;
  const float* bias;

  Row row(int64_t index) const {
    const int64_t b = index / s.channels, c = index % s.channels;
    const int64_t k = c / (s.channels / s.groups);
    const int64_t bc_offset = (b * s.groups + k) * s.state * s.length;
    return Row{u + index * s.length, delta + index * s.length, A + c * s.state,
               B + bc_offset, C + bc_offset, D ? D[c] : 0.0f, bias ? bias[c] : 0.0f,
               s.length, s.state};
  }
};

at::Tensor as_f32(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

const float* optional_ptr(const std::optional<at::Tensor>& t, at::Tensor& holder) {
  if (!t.has_value()) return nullptr;
  holder = as_f32(*t);
  return holder.data_ptr<float>();
}

int64_t grain_for(const ScanSizes& s) {
  // Enough rows per task to amortise scheduling, at least one.
  return std::max<int64_t>(1, 4096 / std::max<int64_t>(1, s.length * s.state));
}

}  // namespace

at::Tensor selective_scan_fwd_cpu(const at::Tensor& u, const at::Tensor& delta,
                                  const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                  const std::optional<at::Tensor>& D,
                                  const std::optional<at::Tensor>& delta_bias,
                                  bool delta_softplus) {
  const ScanSizes s = check_scan_args(u, delta, A, B, C, D, delta_bias);
  const at::Tensor u32 = as_f32(u), delta32 = as_f32(delta), A32 = as_f32(A), B32 = as_f32(B),
                   C32 = as_f32(C);
  at::Tensor D32, bias32;
  const RowIndexer idx{s, u32.data_ptr<float>(), delta32.data_ptr<float>(),
                       A32.data_ptr<float>(), B32.data_ptr<float>(), C32.data_ptr<float>(),
                       optional_ptr(D, D32), optional_ptr(delta_bias, bias32)};
  at::Tensor out = at::empty({s.batch, s.channels, s.length}, u.options().dtype(at::kFloat));
  float* out_ptr = out.data_ptr<float>();
  at::parallel_for(0, s.batch * s.channels, grain_for(s), [&](int64_t begin, int64_t end) {
    std::vector<float> buffers(3 * s.length);
    float* dt = buffers.data();
    for (int64_t i = begin; i < end; ++i) {
      scan_fwd_row(idx.row(i), delta_softplus, out_ptr + i * s.length, dt, dt + s.length,
                   dt + 2 * s.length);
    }
  });
  return out;
}

ScanGrads selective_scan_bwd_cpu(const at::Tensor& dout, const at::Tensor& u,
                                 const at::Tensor& delta, const at::Tensor& A,
                                 const at::Tensor& B, const at::Tensor& C,
                                 const std::optional<at::Tensor>& D,
                                 const std::optional<at::Tensor>& delta_bias,
                                 bool delta_softplus) {
  const ScanSizes s = check_scan_args(u, delta, A, B, C, D, delta_bias);
  TORCH_CHECK(dout.sizes() == u.sizes(), "selective_scan_bwd: dout has shape ", dout.sizes(),
              ", expected the output shape ", u.sizes());
  const at::Tensor u32 = as_f32(u), delta32 = as_f32(delta), A32 = as_f32(A), B32 = as_f32(B),
                   C32 = as_f32(C), gy32 = as_f32(dout);
  at::Tensor D32, bias32;
  const RowIndexer idx{s, u32.data_ptr<float>(), delta32.data_ptr<float>(),
                       A32.data_ptr<float>(), B32.data_ptr<float>(), C32.data_ptr<float>(),
                       optional_ptr(D, D32), optional_ptr(delta_bias, bias32)};
  const auto f32 = u.options().dtype(at::kFloat);
  const int64_t rows = s.batch * s.channels;
  at::Tensor du = at::empty({s.batch, s.channels, s.length}, f32);
  at::Tensor ddelta = at::empty({s.batch, s.channels, s.length}, f32);
  // Per-channel contributions, reduced over the channels of a group / the batch below.
  at::Tensor dB_rows = at::empty({s.batch, s.channels, s.state, s.length}, f32);
  at::Tensor dC_rows = at::empty({s.batch, s.channels, s.state, s.length}, f32);
  at::Tensor dA_rows = at::empty({s.batch, s.channels, s.state}, f32);
  at::Tensor dD_rows = at::empty({s.batch, s.channels}, f32);
  at::Tensor dbias_rows = at::empty({s.batch, s.channels}, f32);
  const float* gy = gy32.data_ptr<float>();
  float *du_p = du.data_ptr<float>(), *ddelta_p = ddelta.data_ptr<float>();
  float *dB_p = dB_rows.data_ptr<float>(), *dC_p = dC_rows.data_ptr<float>();
  float *dA_p = dA_rows.data_ptr<float>(), *dD_p = dD_rows.data_ptr<float>();
  float* dbias_p = dbias_rows.data_ptr<float>();
  const int64_t L = s.length, N = s.state;
  at::parallel_for(0, rows, grain_for(s), [&](int64_t begin, int64_t end) {
    std::vector<float> buffers((3 + 2 * N) * L + N);
    float* dt = buffers.data();
    float* g = dt + L;
    float* ddt = g + L;
    float* decay = ddt + L;
    float* h = decay + N * L;
    for (int64_t i = begin; i < end; ++i) {
      const RowGrads grads{du_p + i * L, ddelta_p + i * L, dB_p + i * N * L, dC_p + i * N * L,
                           dA_p + i * N, dD_p + i, dbias_p + i};
      scan_bwd_row(idx.row(i), delta_softplus, gy + i * L, grads, dt, decay, h, g, ddt);
    }
  });
  const int64_t per_group = s.channels / s.groups;
  auto group_sum = [&](const at::Tensor& rows_t) {
    return rows_t.view({s.batch, s.groups, per_group, s.state, s.length}).sum(2);
  };
  return {du.to(u.scalar_type()),
          ddelta.to(delta.scalar_type()),
          dA_rows.sum(0),
          group_sum(dB_rows).to(B.scalar_type()),
          group_sum(dC_rows).to(C.scalar_type()),
          dD_rows.sum(0),
          dbias_rows.sum(0)};
}

}  // namespace mmvmamba
