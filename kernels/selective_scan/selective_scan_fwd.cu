// Selective scan forward on CUDA (see selective_scan_cuda.cuh for the work layout).
#include <c10/util/Exception.h>

#include "selective_scan_cuda.cuh"

namespace mmvmamba::cuda {
namespace {

// One TPR-lane segment per (batch, channel) row; states n = 0..N-1 are scanned one after the
// other, the output accumulating in global memory (read back only when N > 1).
template <int TPR, typename in_t, typename bc_t>
__global__ void __launch_bounds__(kBlock) scan_fwd_kernel(ScanParams p) {
  constexpr int64_t kChunk = TPR * kItems;
  const RowInfo r = row_info<TPR>(p);
  const int64_t L = p.length, N = p.state;
  const in_t* u_row = static_cast<const in_t*>(p.u) + r.row * L;
  const in_t* delta_row = static_cast<const in_t*>(p.delta) + r.row * L;
  const int64_t bc_offset = (r.b * p.groups + r.k) * N * L;
  const bc_t* B_rows = static_cast<const bc_t*>(p.B) + bc_offset;
  const bc_t* C_rows = static_cast<const bc_t*>(p.C) + bc_offset;
  float* out_row = p.out + r.row * L;
  const float D = p.D ? p.D[r.c] : 0.f;
  const float bias = p.bias ? p.bias[r.c] : 0.f;

  for (int64_t n = 0; n < N; ++n) {
    const float A_n = p.A[r.c * N + n];
    float carry = 0.f;  // state entering the chunk
    for (int64_t start = 0; start < L; start += kChunk) {
      const int64_t base = start + static_cast<int64_t>(r.lane) * kItems;
      float u[kItems], dt[kItems], Bv[kItems], Cv[kItems], a[kItems], x[kItems];
      load_items(u_row, base, L, r.valid, p.vec_ok, 0.f, u);
      load_items(delta_row, base, L, r.valid, p.vec_ok, 0.f, dt);
      load_items(B_rows + n * L, base, L, r.valid, p.vec_ok, 0.f, Bv);
      load_items(C_rows + n * L, base, L, r.valid, p.vec_ok, 0.f, Cv);
      float P = 1.f, S = 0.f;
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const float z = dt[i] + bias;
        dt[i] = p.softplus ? softplus(z) : z;
        const bool in_range = base + i < L;
        a[i] = in_range ? __expf(dt[i] * A_n) : 1.f;
        x[i] = in_range ? dt[i] * Bv[i] * u[i] : 0.f;
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

      float y[kItems];
      if (n == 0) {
#pragma unroll
        for (int i = 0; i < kItems; ++i) y[i] = D * u[i];
      } else {
        load_items(out_row, base, L, r.valid, p.vec_ok, 0.f, y);
      }
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        h = a[i] * h + x[i];
        y[i] += Cv[i] * h;
      }
      store_items(out_row, base, L, r.valid, p.vec_ok, y);
    }
  }
}

template <int TPR, typename in_t, typename bc_t>
void launch(const ScanParams& p, cudaStream_t stream) {
  constexpr int kRowsPerBlock = kBlock / TPR;
  const int64_t rows = p.batch * p.channels;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  scan_fwd_kernel<TPR, in_t, bc_t><<<static_cast<unsigned>(blocks), kBlock, 0, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "selective_scan_fwd CUDA launch failed: ",
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

void launch_scan_fwd(const ScanParams& p, int in_dtype, int bc_dtype, cudaStream_t stream) {
  switch (in_dtype) {
    case kF32: launch_tpr<float, float>(p, stream); break;
    case kF16: launch_bc<__half>(p, bc_dtype, stream); break;
    case kBF16: launch_bc<__nv_bfloat16>(p, bc_dtype, stream); break;
    default: TORCH_CHECK(false, "selective_scan_fwd: unsupported dtype code ", in_dtype);
  }
}

}  // namespace mmvmamba::cuda
