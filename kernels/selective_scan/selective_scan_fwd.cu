// Selective scan forward on CUDA (see selective_scan_cuda.cuh for the work layout).
#include <c10/util/Exception.h>

#include "selective_scan_cuda.cuh"

namespace mmvmamba::cuda {
namespace {

// Loads one chunk of a unit and builds the per-position decay a and drive x of state n.
// Positions outside [begin, end) get the identity (a = 1, x = 0).
template <int ITEMS, typename in_t, typename bc_t>
__device__ __forceinline__ void chunk_decay_drive(const ScanParams& p, const UnitInfo& r,
                                                  const in_t* u_row, const in_t* delta_row,
                                                  const bc_t* B_n, float A_n, float bias,
                                                  int64_t base, float (&u)[ITEMS],
                                                  float (&a)[ITEMS], float (&x)[ITEMS]) {
  float dt[ITEMS], Bv[ITEMS];
  load_items<ITEMS>(u_row, base, r.end, r.valid, p.vec_ok, 0.f, u);
  load_items<ITEMS>(delta_row, base, r.end, r.valid, p.vec_ok, 0.f, dt);
  load_items<ITEMS>(B_n, base, r.end, r.valid, p.vec_ok, 0.f, Bv);
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    const float d = step_size(p, dt[i], bias);
    const bool in_range = base + i < r.end;
    a[i] = in_range ? __expf(d * A_n) : 1.f;
    x[i] = in_range ? d * Bv[i] * u[i] : 0.f;
  }
}

// Each segment's total map h -> P h + S, per state n (only launched when S > 1).
template <int TPR, int ITEMS, typename in_t, typename bc_t>
__global__ void __launch_bounds__(kBlock, 8) segment_maps_fwd_kernel(ScanParams p) {
  constexpr int64_t kChunk = TPR * ITEMS;
  const UnitInfo r = unit_info<TPR>(p);
  const int64_t L = p.length, N = p.state, rows = p.batch * p.channels;
  const in_t* u_row = static_cast<const in_t*>(p.u) + r.row * L;
  const in_t* delta_row = static_cast<const in_t*>(p.delta) + r.row * L;
  const bc_t* B_rows = static_cast<const bc_t*>(p.B) + (r.b * p.groups + r.k) * N * L;
  const float bias = p.bias ? p.bias[r.c] : 0.f;
  for (int64_t n = 0; n < N; ++n) {
    const float A_n = p.A[r.c * N + n];
    float P_tot = 1.f, S_tot = 0.f;
    // Every unit walks the same number of chunks (warp shuffles need all lanes); chunks past
    // a short final segment are fully masked.
    for (int64_t chunk = 0; chunk < p.chunks_per_seg; ++chunk) {
      const int64_t base = r.begin + chunk * kChunk + static_cast<int64_t>(r.lane) * ITEMS;
      float u[ITEMS], a[ITEMS], x[ITEMS];
      chunk_decay_drive<ITEMS>(p, r, u_row, delta_row, B_rows + n * L, A_n, bias, base, u, a,
                               x);
      float P = 1.f, S = 0.f;
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) {
        S = a[i] * S + x[i];
        P = P * a[i];
      }
      segment_scan<TPR>(r.lane, P, S);
      const float P_all = __shfl_sync(kFullMask, P, TPR - 1, TPR);
      const float S_all = __shfl_sync(kFullMask, S, TPR - 1, TPR);
      S_tot = P_all * S_tot + S_all;
      P_tot = P_all * P_tot;
    }
    if (r.lane == 0 && r.valid) {
      float* m = segment_map(p, n, r.seg, r.row, rows);
      m[0] = P_tot;
      m[1] = S_tot;
    }
  }
}

// One TPR-lane group per unit; states n = 0..N-1 are scanned one after the other, the output
// accumulating in global memory (read back only when N > 1). With p.states the lanes whose
// first position is a multiple of kStateStride also store the state entering it; with
// p.out == nullptr only those checkpoints are produced.
template <int TPR, int ITEMS, typename in_t, typename bc_t>
__global__ void __launch_bounds__(kBlock, 8) scan_fwd_kernel(ScanParams p) {
  static_assert((TPR * ITEMS) % kStateStride == 0 && kStateStride % ITEMS == 0,
                "checkpoints must fall on lane boundaries of every chunk");
  constexpr int64_t kChunk = TPR * ITEMS;
  const UnitInfo r = unit_info<TPR>(p);
  const int64_t L = p.length, N = p.state;
  const in_t* u_row = static_cast<const in_t*>(p.u) + r.row * L;
  const in_t* delta_row = static_cast<const in_t*>(p.delta) + r.row * L;
  const int64_t bc_offset = (r.b * p.groups + r.k) * N * L;
  const bc_t* B_rows = static_cast<const bc_t*>(p.B) + bc_offset;
  const bc_t* C_rows = static_cast<const bc_t*>(p.C) + bc_offset;
  float* out_row = p.out ? p.out + r.row * L : nullptr;
  const float D = p.D ? p.D[r.c] : 0.f;
  const float bias = p.bias ? p.bias[r.c] : 0.f;
  const int64_t slots = num_state_slots(L);
  const bool stores_states = p.states != nullptr && r.valid &&
                             (r.lane * ITEMS) % kStateStride == 0;

  for (int64_t n = 0; n < N; ++n) {
    const float A_n = p.A[r.c * N + n];
    float* states_row =
        p.states ? p.states + (n * p.batch * p.channels + r.row) * slots : nullptr;
    // State entering the chunk.
    float carry = p.num_segs > 1 ? segment_entry_state(p, n, r.row, r.seg) : 0.f;
    // Every unit walks the same number of chunks (warp shuffles need all lanes); chunks past
    // a short final segment are fully masked.
    for (int64_t chunk = 0; chunk < p.chunks_per_seg; ++chunk) {
      const int64_t base = r.begin + chunk * kChunk + static_cast<int64_t>(r.lane) * ITEMS;
      float u[ITEMS], a[ITEMS], x[ITEMS];
      chunk_decay_drive<ITEMS>(p, r, u_row, delta_row, B_rows + n * L, A_n, bias, base, u, a,
                               x);
      float P = 1.f, S = 0.f;
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) {
        S = a[i] * S + x[i];
        P = P * a[i];
      }
      segment_scan<TPR>(r.lane, P, S);
      float P_ex = __shfl_up_sync(kFullMask, P, 1, TPR);
      float S_ex = __shfl_up_sync(kFullMask, S, 1, TPR);
      if (r.lane == 0) {
        P_ex = 1.f;
        S_ex = 0.f;
      }
      float h = P_ex * carry + S_ex;
      const float P_all = __shfl_sync(kFullMask, P, TPR - 1, TPR);
      const float S_all = __shfl_sync(kFullMask, S, TPR - 1, TPR);
      carry = P_all * carry + S_all;
      if (stores_states && base < r.end) states_row[base / kStateStride] = h;
      if (out_row == nullptr) continue;

      float Cv[ITEMS], y[ITEMS];
      load_items<ITEMS>(C_rows + n * L, base, r.end, r.valid, p.vec_ok, 0.f, Cv);
      if (n == 0) {
#pragma unroll
        for (int i = 0; i < ITEMS; ++i) y[i] = D * u[i];
      } else {
        load_items<ITEMS>(out_row, base, r.end, r.valid, p.vec_ok, 0.f, y);
      }
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) {
        h = a[i] * h + x[i];
        y[i] += Cv[i] * h;
      }
      store_items<ITEMS>(out_row, base, r.end, r.valid, p.vec_ok, y);
    }
  }
}

}  // namespace

int64_t scan_fwd_wave_warps(int tpr, int in_dtype, int bc_dtype) {
  int64_t warps = 0;
  dispatch_instance(tpr, in_dtype, bc_dtype, [&](auto inst) {
    using I = decltype(inst);
    warps = wave_warps<scan_fwd_kernel<I::TPR, kFwdItems, typename I::in_t,
                                           typename I::bc_t>>();
  });
  return warps;
}

void launch_scan_fwd(const ScanParams& p, const LaunchConfig& cfg, int in_dtype, int bc_dtype,
                     cudaStream_t stream) {
  TORCH_CHECK(cfg.items == kFwdItems, "selective_scan_fwd: config built for ", cfg.items,
              " items per lane, the kernel uses ", kFwdItems);
  dispatch_instance(cfg.tpr, in_dtype, bc_dtype, [&](auto inst) {
    using I = decltype(inst);
    using in_t = typename I::in_t;
    using bc_t = typename I::bc_t;
    launch_passes("selective_scan_fwd", segment_maps_fwd_kernel<I::TPR, kFwdItems, in_t, bc_t>,
                  scan_fwd_kernel<I::TPR, kFwdItems, in_t, bc_t>, p, cfg.tpr, stream);
  });
}

}  // namespace mmvmamba::cuda
