// Selective scan backward on CUDA (see selective_scan_cuda.cuh for the work layout).
//
// Per unit and state n, the chunks are walked in reverse. A chunk's states are recomputed from
// the forward's checkpoints (p.states): each kStateStride positions of the chunk start from
// their own, so the lane scan for them spans kStateStride / ITEMS lanes, not the whole unit.
// The adjoint recurrence
// g_l = gy_l * C_l + a_{l+1} * g_{l+1} is solved with the same affine scan in reverse lane
// order. When rows are cut into segments, a first pass computes each segment's adjoint map so
// that a segment can start from the adjoint of the segments after it.
// dB and dC (shared by the channels of a group) are summed over the units of a block in shared
// memory before one atomicAdd per position; dA, dD and dbias are summed over the unit's lanes
// and atomically over the batch and segments.
// Chunks wholly inside their segment (all of them but a row's last, usually) run a copy of the
// body without per-position bounds checks (the checks made the kernel issue-bound), and every
// chunk asks L2 for the next one's inputs first.
#include <c10/util/Exception.h>

#include <type_traits>

#include "selective_scan_cuda.cuh"

namespace mmvmamba::cuda {
namespace {

// Everything one chunk of one unit needs, recomputed from the inputs. Positions outside
// [begin, end) get a = 0 (no coupling past the end) and u = B = 0, so their drive
// x = dt * B * u is 0 (x is recomputed where needed: keeping it costs registers the kernel
// does not have).
template <int ITEMS>
struct ChunkData {
  float u[ITEMS], dt[ITEMS], Bv[ITEMS], a[ITEMS];
  __device__ __forceinline__ float x(int i) const { return dt[i] * Bv[i] * u[i]; }
};

template <int ITEMS, bool kFull, typename in_t, typename bc_t>
__device__ __forceinline__ void load_chunk(const ScanParams& p, const UnitInfo& r,
                                           const in_t* u_row, const in_t* delta_row,
                                           const bc_t* B_n, float A_n, float bias,
                                           int64_t base, ChunkData<ITEMS>& d) {
  load_items<ITEMS, kFull>(u_row, base, r.end, r.valid, p.vec_ok, 0.f, d.u);
  load_items<ITEMS, kFull>(delta_row, base, r.end, r.valid, p.vec_ok, 0.f, d.dt);
  load_items<ITEMS, kFull>(B_n, base, r.end, r.valid, p.vec_ok, 0.f, d.Bv);
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    d.dt[i] = step_size(p, d.dt[i], bias);
    d.a[i] = kFull || base + i < r.end ? __expf(d.dt[i] * A_n) : 0.f;
  }
}

// The map h -> P_ex h + S_ex from the state entering the lane's checkpoint stride to the state
// entering the lane's first item: a lane-local scan, then one across the LANES lanes of the
// stride (identity on its first lane).
template <int LANES, int ITEMS>
__device__ __forceinline__ void stride_entry_map(int lane, const ChunkData<ITEMS>& d,
                                                 float& P_ex, float& S_ex) {
  float P = 1.f, S = 0.f;
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    S = d.a[i] * S + d.x(i);
    P = P * d.a[i];
  }
  segment_scan<LANES>(lane, P, S);
  P_ex = __shfl_up_sync(kFullMask, P, 1, LANES);
  S_ex = __shfl_up_sync(kFullMask, S, 1, LANES);
  if (lane == 0) {
    P_ex = 1.f;
    S_ex = 0.f;
  }
}

// Each segment's adjoint map v -> C + M v, where v is a_{l} g_{l} at the position after the
// segment and the result is the same quantity at its first position (only launched when S > 1).
template <int TPR, int ITEMS, typename in_t, typename bc_t>
__global__ void __launch_bounds__(kBlock, 8) segment_maps_bwd_kernel(ScanParams p) {
  constexpr int64_t kChunk = TPR * ITEMS;
  const UnitInfo r = unit_info<TPR>(p);
  const int64_t L = p.length, N = p.state, rows = p.batch * p.channels;
  const in_t* delta_row = static_cast<const in_t*>(p.delta) + r.row * L;
  const float* gy_row = p.dout + r.row * L;
  const int64_t bc_offset = (r.b * p.groups + r.k) * N * L;
  const float bias = p.bias ? p.bias[r.c] : 0.f;
  for (int64_t n = 0; n < N; ++n) {
    const float A_n = p.A[r.c * N + n];
    const bc_t* C_n = static_cast<const bc_t*>(p.C) + bc_offset + n * L;
    float M_tot = 1.f, C_tot = 0.f;
    for (int64_t chunk = 0; chunk < p.chunks_per_seg; ++chunk) {
      const int64_t base = r.begin + chunk * kChunk + static_cast<int64_t>(r.lane) * ITEMS;
      float a[ITEMS], Cv[ITEMS], gy[ITEMS];
      load_items<ITEMS>(delta_row, base, r.end, r.valid, p.vec_ok, 0.f, a);
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) {
        a[i] = base + i < r.end ? __expf(step_size(p, a[i], bias) * A_n) : 0.f;
      }
      load_items<ITEMS>(C_n, base, r.end, r.valid, p.vec_ok, 0.f, Cv);
      load_items<ITEMS>(gy_row, base, r.end, r.valid, p.vec_ok, 0.f, gy);
      // Adjoint map of the chunk with the last lane's last item taking v directly.
      const float a_next_lane = __shfl_down_sync(kFullMask, a[0], 1, TPR);
      const float m_last = r.lane == TPR - 1 ? 1.f : a_next_lane;
      float M = 1.f, Cc = 0.f;
#pragma unroll
      for (int i = ITEMS - 1; i >= 0; --i) {
        const float m = i == ITEMS - 1 ? m_last : a[i + 1];
        Cc = gy[i] * Cv[i] + m * Cc;
        M = m * M;
      }
      segment_suffix_scan<TPR>(r.lane, M, Cc);
      const float a_first = __shfl_sync(kFullMask, a[0], 0, TPR);
      const float M_k = a_first * __shfl_sync(kFullMask, M, 0, TPR);
      const float C_k = a_first * __shfl_sync(kFullMask, Cc, 0, TPR);
      C_tot = C_tot + M_tot * C_k;
      M_tot = M_tot * M_k;
    }
    if (r.lane == 0 && r.valid) {
      float* m = segment_map(p, n, r.seg, r.row, rows);
      m[0] = M_tot;
      m[1] = C_tot;
    }
  }
}

template <int TPR, int ITEMS, typename in_t, typename bc_t>
__global__ void __launch_bounds__(kBlock, 6) scan_bwd_kernel(ScanParams p) {
  constexpr int kUnitsPerBlock = kBlock / TPR;
  constexpr int64_t kChunk = TPR * ITEMS;
  __shared__ float smem_dB[kUnitsPerBlock][kChunk];
  __shared__ float smem_dC[kUnitsPerBlock][kChunk];

  const UnitInfo r = unit_info<TPR>(p);
  static_assert((TPR * ITEMS) % kStateStride == 0, "chunks must start on checkpoints");
  // Lanes of one checkpoint stride: each group of them starts from its own checkpoint.
  constexpr int kStrideLanes = kStateStride / ITEMS;
  static_assert(kStateStride % ITEMS == 0 && TPR % kStrideLanes == 0,
                "checkpoint strides must cover whole lanes of a unit");
  const int64_t L = p.length, N = p.state, rows = p.batch * p.channels;
  const int64_t units = rows * p.num_segs;
  const int64_t slots = num_state_slots(L);
  const in_t* u_row = static_cast<const in_t*>(p.u) + r.row * L;
  const in_t* delta_row = static_cast<const in_t*>(p.delta) + r.row * L;
  const float* gy_row = p.dout + r.row * L;
  const int64_t bc_offset = (r.b * p.groups + r.k) * N * L;
  const bc_t* B_rows = static_cast<const bc_t*>(p.B) + bc_offset;
  const bc_t* C_rows = static_cast<const bc_t*>(p.C) + bc_offset;
  const float D = p.D ? p.D[r.c] : 0.f;
  const float bias = p.bias ? p.bias[r.c] : 0.f;
  // Every unit walks the same number of chunks (warp shuffles need all lanes); chunks past a
  // short final segment are fully masked.
  const int64_t num_chunks = p.chunks_per_seg;

  // Do all units of this block share one dB/dC row (valid, same segment, batch and group)?
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kUnitsPerBlock;
  const int64_t last = first + kUnitsPerBlock - 1;
  const int64_t first_row = first % rows, last_row = last % rows;
  const bool block_shares_bc =
      last < units && first / rows == last / rows &&
      first_row / p.channels == last_row / p.channels &&
      (first_row % p.channels) / p.per_group == (last_row % p.channels) / p.per_group;
  const int unit_in_block = threadIdx.x / TPR;
  // All units of the block valid and in one segment: then whether a chunk is whole (every
  // position before the segment's end, vector loads allowed) is the same for the whole block,
  // and whole chunks run a copy of the body without per-position bounds checks.
  const bool block_in_one_segment = last < units && first / rows == last / rows;

  float dD_acc = 0.f, dbias_acc = 0.f;
  for (int64_t n = 0; n < N; ++n) {
    const float A_n = p.A[r.c * N + n];
    const bc_t* B_n = B_rows + n * L;
    const bc_t* C_n = C_rows + n * L;
    const float* states_row = p.states + (n * rows + r.row) * slots;
    float g_next = p.num_segs > 1 ? segment_exit_adjoint(p, n, r.row, r.seg) : 0.f;
    float a_next = 1.f;  // g_next already carries the decay of the position after the unit
    float dA_acc = 0.f;
    auto chunk_body = [&](const int64_t chunk, auto full) {
      constexpr bool kFull = decltype(full)::value;
      const int64_t base = r.begin + chunk * kChunk + static_cast<int64_t>(r.lane) * ITEMS;
      if (chunk > 0) {  // the chunk walked next (to the left) into L2 while this one runs
        const int64_t ahead = base - kChunk;
        prefetch_l2(u_row + ahead);
        prefetch_l2(delta_row + ahead);
        prefetch_l2(B_n + ahead);
        prefetch_l2(C_n + ahead);
        prefetch_l2(gy_row + ahead);
      }
      ChunkData<ITEMS> d;
      load_chunk<ITEMS, kFull>(p, r, u_row, delta_row, B_n, A_n, bias, base, d);
      float Cv[ITEMS], gy[ITEMS];
      load_items<ITEMS, kFull>(C_n, base, r.end, r.valid, p.vec_ok, 0.f, Cv);
      load_items<ITEMS, kFull>(gy_row, base, r.end, r.valid, p.vec_ok, 0.f, gy);

      // States inside the chunk, from the checkpoint of the lane's stride.
      float P_ex, S_ex;
      stride_entry_map<kStrideLanes, ITEMS>(r.lane % kStrideLanes, d, P_ex, S_ex);
      const int64_t chunk_start = r.begin + chunk * kChunk;
      const int64_t stride_start = base - (r.lane % kStrideLanes) * ITEMS;
      const float entry =
          kFull || stride_start < r.end ? states_row[stride_start / kStateStride] : 0.f;
      const float h_enter = P_ex * entry + S_ex;

      // Adjoint: g_i = c_i + m_i * g_{i+1} with c = gy * C and m_i = a_{i+1}.
      const float a_next_lane = __shfl_down_sync(kFullMask, d.a[0], 1, TPR);
      const float m_last = r.lane == TPR - 1 ? a_next : a_next_lane;
      float M = 1.f, Cc = 0.f;
#pragma unroll
      for (int i = ITEMS - 1; i >= 0; --i) {
        const float m = i == ITEMS - 1 ? m_last : d.a[i + 1];
        Cc = gy[i] * Cv[i] + m * Cc;
        M = m * M;
      }
      segment_suffix_scan<TPR>(r.lane, M, Cc);
      const float M_next = __shfl_down_sync(kFullMask, M, 1, TPR);
      const float C_next = __shfl_down_sync(kFullMask, Cc, 1, TPR);
      float g = r.lane == TPR - 1 ? g_next : C_next + M_next * g_next;
      const float M_first = __shfl_sync(kFullMask, M, 0, TPR);
      const float C_first = __shfl_sync(kFullMask, Cc, 0, TPR);
      const float a_first = __shfl_sync(kFullMask, d.a[0], 0, TPR);
      g_next = C_first + M_first * g_next;
      a_next = a_first;

      // States h_i of this lane's items (h[i - 1] is the state before item i).
      float h[ITEMS];
      {
        float state = h_enter;
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) {
          state = d.a[i] * state + d.x(i);
          h[i] = state;
        }
      }
      if (block_shares_bc) __syncthreads();  // previous chunk's readers are done
      float du[ITEMS], ddt[ITEMS];
      const int64_t bc_base = bc_offset + n * L;
#pragma unroll
      for (int i = ITEMS - 1; i >= 0; --i) {
        const float m = i == ITEMS - 1 ? m_last : d.a[i + 1];
        g = gy[i] * Cv[i] + m * g;
        const float g_dt = g * d.dt[i];
        const float dB_i = g_dt * d.u[i];
        const float dC_i = gy[i] * h[i];
        du[i] = g_dt * d.Bv[i];
        const float h_prev = i > 0 ? h[i - 1] : h_enter;
        const float d_log_decay = g * h_prev * d.a[i];
        dA_acc += d_log_decay * d.dt[i];
        ddt[i] = d_log_decay * A_n + g * d.Bv[i] * d.u[i];
        if (block_shares_bc) {
          smem_dB[unit_in_block][r.lane * ITEMS + i] = dB_i;
          smem_dC[unit_in_block][r.lane * ITEMS + i] = dC_i;
        } else if (kFull || (r.valid && base + i < r.end)) {
          atomicAdd(p.dB + bc_base + base + i, dB_i);
          atomicAdd(p.dC + bc_base + base + i, dC_i);
        }
      }
      if (block_shares_bc) {
        __syncthreads();
        for (int pos = threadIdx.x; pos < kChunk; pos += kBlock) {
          const int64_t l = chunk_start + pos;
          if (kFull || l < r.end) {
            float sB = 0.f, sC = 0.f;
#pragma unroll
            for (int j = 0; j < kUnitsPerBlock; ++j) {
              sB += smem_dB[j][pos];
              sC += smem_dC[j][pos];
            }
            atomicAdd(p.dB + bc_base + l, sB);
            atomicAdd(p.dC + bc_base + l, sC);
          }
        }
      }

      // du, ddt: accumulate over n; the last n finishes them.
      float* du_acc = p.du_acc + r.row * L;
      float* ddt_acc = p.ddt_acc + r.row * L;
      if (n > 0) {
        float prev_du[ITEMS], prev_ddt[ITEMS];
        load_items<ITEMS, kFull>(du_acc, base, r.end, r.valid, p.vec_ok, 0.f, prev_du);
        load_items<ITEMS, kFull>(ddt_acc, base, r.end, r.valid, p.vec_ok, 0.f, prev_ddt);
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) {
          du[i] += prev_du[i];
          ddt[i] += prev_ddt[i];
        }
      }
      if (n + 1 < N) {
        store_items<ITEMS, kFull>(du_acc, base, r.end, r.valid, p.vec_ok, du);
        store_items<ITEMS, kFull>(ddt_acc, base, r.end, r.valid, p.vec_ok, ddt);
      } else {
        float ddelta[ITEMS];
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) {
          du[i] += D * gy[i];
          ddelta[i] = p.softplus ? ddt[i] * softplus_grad_from_value(d.dt[i]) : ddt[i];
          if (kFull || base + i < r.end) {
            dD_acc += gy[i] * d.u[i];
            dbias_acc += ddelta[i];
          }
        }
        store_items<ITEMS, kFull>(static_cast<in_t*>(p.du) + r.row * L, base, r.end, r.valid,
                                  p.vec_ok, du);
        store_items<ITEMS, kFull>(static_cast<in_t*>(p.ddelta) + r.row * L, base, r.end,
                                  r.valid, p.vec_ok, ddelta);
      }
    };
    for (int64_t chunk = num_chunks - 1; chunk >= 0; --chunk) {
      const int64_t chunk_start = r.begin + chunk * kChunk;
      if (block_in_one_segment && p.vec_ok && chunk_start + kChunk <= r.end) {
        chunk_body(chunk, std::true_type{});
      } else {
        chunk_body(chunk, std::false_type{});
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

template <typename T>
__global__ void cast_pair_kernel(const float* a, const float* b, T* a_out, T* b_out,
                                 int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    a_out[i] = from_float<T>(a[i]);
    b_out[i] = from_float<T>(b[i]);
  }
}

}  // namespace

void launch_cast_pair(const float* a, const float* b, void* a_out, void* b_out, int64_t n,
                      int dtype, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads,
                                                              65535));
  if (n == 0) return;
  if (dtype == kF16) {
    cast_pair_kernel<<<blocks, kThreads, 0, stream>>>(a, b, static_cast<__half*>(a_out),
                                                      static_cast<__half*>(b_out), n);
  } else {
    TORCH_CHECK(dtype == kBF16, "launch_cast_pair: unsupported dtype code ", dtype);
    cast_pair_kernel<<<blocks, kThreads, 0, stream>>>(a, b,
                                                      static_cast<__nv_bfloat16*>(a_out),
                                                      static_cast<__nv_bfloat16*>(b_out), n);
  }
  check_launch("selective_scan_bwd (dB, dC casts)");
}

int64_t scan_bwd_wave_warps(int tpr, int in_dtype, int bc_dtype) {
  int64_t warps = 0;
  dispatch_instance(tpr, in_dtype, bc_dtype, [&](auto inst) {
    using I = decltype(inst);
    warps = wave_warps<scan_bwd_kernel<I::TPR, kBwdItems, typename I::in_t,
                                           typename I::bc_t>>();
  });
  return warps;
}

void launch_scan_bwd(const ScanParams& p, const LaunchConfig& cfg, int in_dtype, int bc_dtype,
                     cudaStream_t stream) {
  TORCH_CHECK(cfg.items == kBwdItems, "selective_scan_bwd: config built for ", cfg.items,
              " items per lane, the kernel uses ", kBwdItems);
  TORCH_CHECK(p.states != nullptr, "selective_scan_bwd: the forward checkpoints are missing");
  dispatch_instance(cfg.tpr, in_dtype, bc_dtype, [&](auto inst) {
    using I = decltype(inst);
    using in_t = typename I::in_t;
    using bc_t = typename I::bc_t;
    launch_passes("selective_scan_bwd", segment_maps_bwd_kernel<I::TPR, kBwdItems, in_t, bc_t>,
                  scan_bwd_kernel<I::TPR, kBwdItems, in_t, bc_t>, p, cfg.tpr, stream);
  });
}

}  // namespace mmvmamba::cuda
