// Selective scan on CUDA: parameters, configuration and device helpers shared by the forward
// and backward kernels.
//
// Layout of the work: a group of TPR consecutive lanes of a warp owns one (batch, channel) row
// and walks it in chunks of TPR * kItems positions; each lane holds kItems consecutive
// positions. Inside a chunk the recurrence h_l = a_l * h_{l-1} + b_l is solved as a scan of
// affine maps: sequentially over a lane's items, then across the TPR lanes with warp shuffles,
// then once more sequentially to produce every state. The state entering a chunk is carried in
// registers. A block of kBlock threads holds kBlock / TPR rows (consecutive channels).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace mmvmamba::cuda {

constexpr int kBlock = 128;
constexpr int kItems = 8;
constexpr unsigned kFullMask = 0xffffffffu;

struct ScanParams {
  // Inputs (u, delta of type in_t; B, C of type bc_t; the rest fp32).
  const void* u;
  const void* delta;
  const float* A;
  const void* B;
  const void* C;
  const float* D;     // nullptr when absent
  const float* bias;  // nullptr when absent
  int64_t batch, channels, length, groups, state, per_group;
  bool softplus;
  bool vec_ok;  // all row starts are 16-byte aligned and L % kItems == 0
  // Forward output.
  float* out;
  // Backward.
  const float* dout;
  void* du;           // in_t
  void* ddelta;       // in_t
  float* dA;          // (K*Cg, N), zero-initialised, summed over the batch
  float* dB;          // (B, K, N, L) fp32, zero-initialised
  float* dC;
  float* dD;          // (K*Cg,), zero-initialised
  float* dbias;       // (K*Cg,), zero-initialised
  float* chunk_states;  // (N, rows, num_chunks): state entering each chunk
  float* du_acc;      // (rows, L) fp32 accumulators across n, used when N > 1
  float* ddt_acc;
  int64_t num_chunks;
};

#ifdef __CUDACC__
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Loads kItems consecutive elements starting at index `base` of a row of length L as floats;
// positions past L (or an invalid row) read as `fill`. Vectorised when the row allows it.
template <typename T>
__device__ __forceinline__ void load_items(const T* row, int64_t base, int64_t L, bool valid,
                                           bool vec_ok, float fill, float (&out)[kItems]) {
  if (valid && vec_ok && base + kItems <= L) {
    constexpr int kPerVec = 16 / sizeof(T);
    static_assert(kItems % kPerVec == 0, "kItems must fill whole 16-byte vectors");
#pragma unroll
    for (int v = 0; v < kItems / kPerVec; ++v) {
      const uint4 raw = *reinterpret_cast<const uint4*>(row + base + v * kPerVec);
      const T* vals = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int i = 0; i < kPerVec; ++i) out[v * kPerVec + i] = to_float(vals[i]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int64_t l = base + i;
      out[i] = (valid && l < L) ? to_float(row[l]) : fill;
    }
  }
}

template <typename T>
__device__ __forceinline__ void store_items(T* row, int64_t base, int64_t L, bool valid,
                                            bool vec_ok, const float (&vals)[kItems]) {
  if (!valid) return;
  if (vec_ok && base + kItems <= L) {
    constexpr int kPerVec = 16 / sizeof(T);
#pragma unroll
    for (int v = 0; v < kItems / kPerVec; ++v) {
      uint4 raw;
      T* packed = reinterpret_cast<T*>(&raw);
#pragma unroll
      for (int i = 0; i < kPerVec; ++i) packed[i] = from_float<T>(vals[v * kPerVec + i]);
      *reinterpret_cast<uint4*>(row + base + v * kPerVec) = raw;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      if (base + i < L) row[base + i] = from_float<T>(vals[i]);
    }
  }
}

// softplus with torch's threshold (20) and its derivative (sigmoid; rounds to 1 above 20).
__device__ __forceinline__ float softplus(float z) { return z > 20.f ? z : log1pf(__expf(z)); }
__device__ __forceinline__ float softplus_grad(float z) { return 1.f / (1.f + __expf(-z)); }

// Inclusive scan of affine maps h -> P * h + S over the TPR lanes of a segment (lane order).
template <int TPR>
__device__ __forceinline__ void segment_scan(int lane, float& P, float& S) {
#pragma unroll
  for (int off = 1; off < TPR; off <<= 1) {
    const float Pp = __shfl_up_sync(kFullMask, P, off, TPR);
    const float Sp = __shfl_up_sync(kFullMask, S, off, TPR);
    if (lane >= off) {
      S = P * Sp + S;
      P = P * Pp;
    }
  }
}

// Inclusive suffix scan of maps g -> C + M * g over the TPR lanes (reverse lane order).
template <int TPR>
__device__ __forceinline__ void segment_suffix_scan(int lane, float& M, float& Cc) {
#pragma unroll
  for (int off = 1; off < TPR; off <<= 1) {
    const float Mn = __shfl_down_sync(kFullMask, M, off, TPR);
    const float Cn = __shfl_down_sync(kFullMask, Cc, off, TPR);
    if (lane + off < TPR) {
      Cc = Cc + M * Cn;
      M = M * Mn;
    }
  }
}

template <int TPR>
__device__ __forceinline__ float segment_sum(float v) {
#pragma unroll
  for (int off = TPR / 2; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off, TPR);
  return v;
}

// Row geometry of one lane.
struct RowInfo {
  int lane;
  int64_t row;   // b * channels + c (clamped to a valid row when !valid)
  bool valid;
  int64_t b, c, k;
};

template <int TPR>
__device__ __forceinline__ RowInfo row_info(const ScanParams& p) {
  constexpr int kRowsPerBlock = kBlock / TPR;
  RowInfo r;
  r.lane = threadIdx.x % TPR;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / TPR;
  r.valid = row < p.batch * p.channels;
  r.row = r.valid ? row : 0;
  r.b = r.row / p.channels;
  r.c = r.row % p.channels;
  r.k = r.c / p.per_group;
  return r;
}

#endif  // __CUDACC__

// Launch helpers (defined in the .cu files).
void launch_scan_fwd(const ScanParams& p, int in_dtype, int bc_dtype, cudaStream_t stream);
void launch_scan_bwd(const ScanParams& p, int in_dtype, int bc_dtype, cudaStream_t stream);

// Threads per row for a sequence length (must match between launch and scratch sizing).
inline int threads_per_row(int64_t length) { return length > 512 ? 32 : 8; }
inline int64_t chunk_count(int64_t length) {
  const int64_t chunk = static_cast<int64_t>(threads_per_row(length)) * kItems;
  return (length + chunk - 1) / chunk;
}

// dtype codes for the launchers.
enum DType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

}  // namespace mmvmamba::cuda
