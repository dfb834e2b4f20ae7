// Selective scan backward on CUDA (see selective_scan_cuda.cuh for the work layout).
//
// Per row and state n: a forward pass stores the state entering each chunk; a reverse pass then
// walks the chunks backwards, recomputing the states inside a chunk from its entry state and
// solving the adjoint recurrence g_l = gy_l * C_l + a_{l+1} * g_{l+1} with the same affine scan
// in reverse lane order. dB and dC (shared by the channels of a group) are summed over the rows
// of a block in shared memory before one atomicAdd per position; dA, dD and dbias are summed
// over the row's lanes and atomically over the batch.
#include <c10/util/Exception.h>

#include "selective_scan_cuda.cuh"

namespace mmvmamba::cuda {
namespace {

template <int TPR, typename in_t, typename bc_t>
__global__ void __launch_bounds__(kBlock) scan_bwd_kernel(ScanParams p) {
  constexpr int kRowsPerBlock = kBlock / TPR;
  constexpr int64_t kChunk = TPR * kItems;
  __shared__ float smem_dB[kRowsPerBlock][kChunk];
  __shared__ float smem_dC[kRowsPerBlock][kChunk];

  const RowInfo r = row_info<TPR>(p);
  const int64_t L = p.length, N = p.state, rows = p.batch * p.channels;
  const in_t* u_row = static_cast<const in_t*>(p.u) + r.row * L;
  const in_t* delta_row = static_cast<const in_t*>(p.delta) + r.row * L;
  const float* gy_row = p.dout + r.row * L;
  const int64_t bc_offset = (r.b * p.groups + r.k) * N * L;
  const bc_t* B_rows = static_cast<const bc_t*>(p.B) + bc_offset;
  const bc_t* C_rows = static_cast<const bc_t*>(p.C) + bc_offset;
  const float D = p.D ? p.D[r.c] : 0.f;
  const float bias = p.bias ? p.bias[r.c] : 0.f;

  // Can this block's rows share one dB/dC reduction (all valid, same batch and group)?
  const int64_t first_row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock;
  const int64_t last_row = first_row + kRowsPerBlock - 1;
  const bool block_shares_bc =
      last_row < rows && (first_row / p.channels == last_row / p.channels) &&
      ((first_row % p.channels) / p.per_group == (last_row % p.channels) / p.per_group);
  const int row_in_block = threadIdx.x / TPR;

  float dD_acc = 0.f, dbias_acc = 0.f;
  for (int64_t n = 0; n < N; ++n) {
    const float A_n = p.A[r.c * N + n];
    const bc_t* B_n = B_rows + n * L;
    const bc_t* C_n = C_rows + n * L;
    float* chunk_states = p.chunk_states + (n * rows + r.row) * p.num_chunks;

    // Pass 1: states entering each chunk.
    float carry = 0.f;
    for (int64_t chunk = 0; chunk < p.num_chunks; ++chunk) {
      const int64_t base = chunk * kChunk + static_cast<int64_t>(r.lane) * kItems;
      float u[kItems], dt[kItems], Bv[kItems];
      load_items(u_row, base, L, r.valid, p.vec_ok, 0.f, u);
      load_items(delta_row, base, L, r.valid, p.vec_ok, 0.f, dt);
      load_items(B_n, base, L, r.valid, p.vec_ok, 0.f, Bv);
      float P = 1.f, S = 0.f;
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const float z = dt[i] + bias;
        const float d = p.softplus ? softplus(z) : z;
        const bool in_range = base + i < L;
        const float a = in_range ? __expf(d * A_n) : 1.f;
        S = a * S + (in_range ? d * Bv[i] * u[i] : 0.f);
        P = P * a;
      }
      if (r.lane == 0 && r.valid) chunk_states[chunk] = carry;
      segment_scan<TPR>(r.lane, P, S);
      const float P_all = __shfl_sync(kFullMask, P, TPR - 1, TPR);
      const float S_all = __shfl_sync(kFullMask, S, TPR - 1, TPR);
      carry = P_all * carry + S_all;
    }
    __syncwarp();

    // Pass 2: chunks in reverse.
    float g_next = 0.f;  // adjoint at the first position of the following chunk
    float a_next = 0.f;  // decay at that position (0 past the end of the row)
    float dA_acc = 0.f;
    for (int64_t chunk = p.num_chunks - 1; chunk >= 0; --chunk) {
      const int64_t base = chunk * kChunk + static_cast<int64_t>(r.lane) * kItems;
      float u[kItems], z[kItems], dt[kItems], Bv[kItems], Cv[kItems], gy[kItems];
      load_items(u_row, base, L, r.valid, p.vec_ok, 0.f, u);
      load_items(delta_row, base, L, r.valid, p.vec_ok, 0.f, z);
      load_items(B_n, base, L, r.valid, p.vec_ok, 0.f, Bv);
      load_items(C_n, base, L, r.valid, p.vec_ok, 0.f, Cv);
      load_items(gy_row, base, L, r.valid, p.vec_ok, 0.f, gy);
      float a[kItems], x[kItems];
      float P = 1.f, S = 0.f;
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        z[i] += bias;
        dt[i] = p.softplus ? softplus(z[i]) : z[i];
        const bool in_range = base + i < L;
        a[i] = in_range ? __expf(dt[i] * A_n) : 0.f;  // 0: no coupling past the end
        x[i] = in_range ? dt[i] * Bv[i] * u[i] : 0.f;
        S = a[i] * S + x[i];
        P = P * a[i];
      }
      // States inside the chunk, from the stored entry state.
      segment_scan<TPR>(r.lane, P, S);
      float P_ex = __shfl_up_sync(kFullMask, P, 1, TPR);
      float S_ex = __shfl_up_sync(kFullMask, S, 1, TPR);
      if (r.lane == 0) {
        P_ex = 1.f;
        S_ex = 0.f;
      }
      const float entry = r.valid ? chunk_states[chunk] : 0.f;
      float h_prev[kItems], h[kItems];
      float state = P_ex * entry + S_ex;
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        h_prev[i] = state;
        state = a[i] * state + x[i];
        h[i] = state;
      }

      // Adjoint: g_i = c_i + m_i * g_{i+1} with c = gy * C and m_i = a_{i+1}.
      const float a_first_next_lane = __shfl_down_sync(kFullMask, a[0], 1, TPR);
      const float m_last = r.lane == TPR - 1 ? a_next : a_first_next_lane;
      float M = 1.f, Cc = 0.f;
#pragma unroll
      for (int i = kItems - 1; i >= 0; --i) {
        const float m = i == kItems - 1 ? m_last : a[i + 1];
        Cc = gy[i] * Cv[i] + m * Cc;
        M = m * M;
      }
      segment_suffix_scan<TPR>(r.lane, M, Cc);
      const float M_next = __shfl_down_sync(kFullMask, M, 1, TPR);
      const float C_next = __shfl_down_sync(kFullMask, Cc, 1, TPR);
      float g = r.lane == TPR - 1 ? g_next : C_next + M_next * g_next;
      const float M_first = __shfl_sync(kFullMask, M, 0, TPR);
      const float C_first = __shfl_sync(kFullMask, Cc, 0, TPR);
      const float a_first = __shfl_sync(kFullMask, a[0], 0, TPR);

      float du[kItems], ddt[kItems], dBv[kItems], dCv[kItems];
#pragma unroll
      for (int i = kItems - 1; i >= 0; --i) {
        const float m = i == kItems - 1 ? m_last : a[i + 1];
        g = gy[i] * Cv[i] + m * g;
        const float g_dt = g * dt[i];
        dCv[i] = gy[i] * h[i];
        dBv[i] = g_dt * u[i];
        du[i] = g_dt * Bv[i];
        const float d_log_decay = g * h_prev[i] * a[i];
        dA_acc += d_log_decay * dt[i];
        ddt[i] = d_log_decay * A_n + g * Bv[i] * u[i];
      }
      g_next = C_first + M_first * g_next;
      a_next = a_first;

      // dB, dC: reduce over the block's rows when they share (b, k), else add per row.
      const int64_t bc_base = bc_offset + n * L;
      if (block_shares_bc) {
        __syncthreads();
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          smem_dB[row_in_block][r.lane * kItems + i] = dBv[i];
          smem_dC[row_in_block][r.lane * kItems + i] = dCv[i];
        }
        __syncthreads();
        for (int pos = threadIdx.x; pos < kChunk; pos += kBlock) {
          const int64_t l = chunk * kChunk + pos;
          if (l < L) {
            float sB = 0.f, sC = 0.f;
#pragma unroll
            for (int j = 0; j < kRowsPerBlock; ++j) {
              sB += smem_dB[j][pos];
              sC += smem_dC[j][pos];
            }
            atomicAdd(p.dB + bc_base + l, sB);
            atomicAdd(p.dC + bc_base + l, sC);
          }
        }
      } else if (r.valid) {
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          if (base + i < L) {
            atomicAdd(p.dB + bc_base + base + i, dBv[i]);
            atomicAdd(p.dC + bc_base + base + i, dCv[i]);
          }
        }
      }

      // du, ddt: accumulate over n; the last n finishes them.
      float* du_acc = p.du_acc + r.row * L;
      float* ddt_acc = p.ddt_acc + r.row * L;
      if (n > 0) {
        float prev_du[kItems], prev_ddt[kItems];
        load_items(du_acc, base, L, r.valid, p.vec_ok, 0.f, prev_du);
        load_items(ddt_acc, base, L, r.valid, p.vec_ok, 0.f, prev_ddt);
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          du[i] += prev_du[i];
          ddt[i] += prev_ddt[i];
        }
      }
      if (n + 1 < N) {
        store_items(du_acc, base, L, r.valid, p.vec_ok, du);
        store_items(ddt_acc, base, L, r.valid, p.vec_ok, ddt);
      } else {
        float ddelta[kItems];
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
          const bool in_range = base + i < L;
          du[i] += D * gy[i];
          ddelta[i] = p.softplus ? ddt[i] * softplus_grad(z[i]) : ddt[i];
          if (in_range) {
            dD_acc += gy[i] * u[i];
            dbias_acc += ddelta[i];
          }
        }
        store_items(static_cast<in_t*>(p.du) + r.row * L, base, L, r.valid, p.vec_ok, du);
        store_items(static_cast<in_t*>(p.ddelta) + r.row * L, base, L, r.valid, p.vec_ok,
                    ddelta);
      }
    }
    dA_acc = segment_sum<TPR>(dA_acc);
    if (r.lane == 0 && r.valid) atomicAdd(p.dA + r.c * N + n, dA_acc);
  }
  dD_acc = segment_sum<TPR>(dD_acc);
  dbias_acc = segment_sum<TPR>(dbias_acc);
  if (r.lane == 0 && r.valid) {
    if (p.D) atomicAdd(p.dD + r.c, dD_acc);
    if (p.bias) atomicAdd(p.dbias + r.c, dbias_acc);
  }
}

template <int TPR, typename in_t, typename bc_t>
void launch(const ScanParams& p, cudaStream_t stream) {
  constexpr int kRowsPerBlock = kBlock / TPR;
  const int64_t rows = p.batch * p.channels;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  scan_bwd_kernel<TPR, in_t, bc_t><<<static_cast<unsigned>(blocks), kBlock, 0, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "selective_scan_bwd CUDA launch failed: ",
              cudaGetErrorString(err));
}

template <typename in_t, typename bc_t>
void launch_tpr(const ScanParams& p, cudaStream_t stream) {
  if (threads_per_row(p.length) == 32) {
    launch<32, in_t, bc_t>(p, stream);
  } else {
    launch<8, in_t, bc_t>(p, stream);
  }
}

template <typename in_t>
void launch_bc(const ScanParams& p, int bc_dtype, cudaStream_t stream) {
  if (bc_dtype == kF32) {
    launch_tpr<in_t, float>(p, stream);
  } else {
    launch_tpr<in_t, in_t>(p, stream);
  }
}

}  // namespace

void launch_scan_bwd(const ScanParams& p, int in_dtype, int bc_dtype, cudaStream_t stream) {
  switch (in_dtype) {
    case kF32: launch_tpr<float, float>(p, stream); break;
    case kF16: launch_bc<__half>(p, bc_dtype, stream); break;
    case kBF16: launch_bc<__nv_bfloat16>(p, bc_dtype, stream); break;
    default: TORCH_CHECK(false, "selective_scan_bwd: unsupported dtype code ", in_dtype);
  }
}

}  // namespace mmvmamba::cuda
