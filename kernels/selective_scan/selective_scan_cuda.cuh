// Selective scan on CUDA: parameters, launch configuration and device helpers shared by the
// forward and backward kernels.
//
// Layout of the work: a group of TPR consecutive lanes of a warp owns one "unit" (a segment of
// one (batch, channel) row) and walks it in chunks of TPR * ITEMS positions; each lane holds
// ITEMS consecutive positions. Inside a chunk the recurrence h_l = a_l * h_{l-1} + b_l is
// solved as a scan of affine maps: sequentially over a lane's items, across the TPR lanes with
// warp shuffles, then once more sequentially to produce every state. The state entering a chunk
// is carried in registers. A block of kBlock threads holds kBlock / TPR units of consecutive
// channels of the same segment.
//
// Long rows with few rows in total are cut into S segments so that the GPU has enough
// independent work; a small pass first computes each segment's total affine map, and each
// segment then composes the maps of the segments before it (forward states) or after it
// (adjoint states) to find its boundary values. S is chosen so that the units fill whole waves
// of resident blocks (no partly filled last wave).
//
// Checkpoints: the forward can also store the state h_{l-1} entering every position l that is a
// multiple of kStateStride (for training). The backward starts each of its chunks from these
// instead of recomputing the forward scan; its chunks and segments start at multiples of
// kStateStride.
#pragma once

#include <c10/util/Exception.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "scan_layout.h"

namespace mmvmamba::cuda {

constexpr int kBlock = 128;
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
  bool vec_ok;  // all row starts are 16-byte aligned and L % 8 == 0
  // Work split (copied from the LaunchConfig).
  int64_t num_segs, seg_len, chunks_per_seg;
  // (N, S, rows, 2): each segment's map, from the segment-map pass of the direction at hand:
  // forward h -> P h + S stored (P, S); backward v -> C + M v stored (M, C).
  float* seg_maps;
  // Forward output (nullptr: the forward only stores the checkpoints).
  float* out;
  // Checkpoints: (N, rows, ceil(L / kStateStride)), the state entering each stride's first
  // position. Written by the forward when not nullptr; read by the backward.
  float* states;
  // Backward.
  const float* dout;
  void* du;             // in_t
  void* ddelta;         // in_t
  float* dA;            // (K*Cg, N), zero-initialised, summed over the batch
  float* dB;            // (B, K, N, L) fp32, zero-initialised
  float* dC;
  float* dD;            // (K*Cg,), zero-initialised
  float* dbias;         // (K*Cg,), zero-initialised
  float* du_acc;        // (rows, L) fp32 accumulators across n, used when N > 1
  float* ddt_acc;
};

// Warps of the forward / backward scan kernel for lanes_per_unit `tpr` that are resident on the
// current GPU at once (from the CUDA occupancy calculator, cached per kernel).
int64_t scan_fwd_wave_warps(int tpr, int in_dtype, int bc_dtype);
int64_t scan_bwd_wave_warps(int tpr, int in_dtype, int bc_dtype);

void launch_scan_fwd(const ScanParams& p, const LaunchConfig& cfg, int in_dtype, int bc_dtype,
                     cudaStream_t stream);
void launch_scan_bwd(const ScanParams& p, const LaunchConfig& cfg, int in_dtype, int bc_dtype,
                     cudaStream_t stream);

// Casts two fp32 buffers of n elements to fp16 / bf16 (dtype code) in one launch.
void launch_cast_pair(const float* a, const float* b, void* a_out, void* b_out, int64_t n,
                      int dtype, cudaStream_t stream);

constexpr int kFwdItems = 8;
constexpr int kBwdItems = 4;

// dtype codes for the launchers.
enum DType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

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

// The widest vector (<= 16 bytes) that ITEMS elements of T fill exactly.
template <int Bytes>
struct VecOf;
template <>
struct VecOf<16> { using type = uint4; };
template <>
struct VecOf<8> { using type = uint2; };
template <>
struct VecOf<4> { using type = unsigned int; };

template <typename T, int ITEMS>
struct Vec {
  static constexpr int kBytes = ITEMS * sizeof(T) >= 16 ? 16 : ITEMS * sizeof(T);
  static constexpr int kPer = kBytes / sizeof(T);
  using type = typename VecOf<kBytes>::type;
};

// Loads ITEMS consecutive elements of a row starting at `base` as floats; positions at or past
// `end` (or an invalid unit) read as `fill`. Vectorised when the row allows it; kFull: the
// caller knows the unit is valid, the row allows vectors and all ITEMS are before `end`.
template <int ITEMS, bool kFull = false, typename T>
__device__ __forceinline__ void load_items(const T* row, int64_t base, int64_t end, bool valid,
                                           bool vec_ok, float fill, float (&out)[ITEMS]) {
  using V = Vec<T, ITEMS>;
  if (kFull || (valid && vec_ok && base + ITEMS <= end)) {
#pragma unroll
    for (int v = 0; v < ITEMS / V::kPer; ++v) {
      const typename V::type raw =
          *reinterpret_cast<const typename V::type*>(row + base + v * V::kPer);
      const T* vals = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int i = 0; i < V::kPer; ++i) out[v * V::kPer + i] = to_float(vals[i]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      const int64_t l = base + i;
      out[i] = (valid && l < end) ? to_float(row[l]) : fill;
    }
  }
}

template <int ITEMS, bool kFull = false, typename T>
__device__ __forceinline__ void store_items(T* row, int64_t base, int64_t end, bool valid,
                                            bool vec_ok, const float (&vals)[ITEMS]) {
  using V = Vec<T, ITEMS>;
  if (!kFull && !valid) return;
  if (kFull || (vec_ok && base + ITEMS <= end)) {
#pragma unroll
    for (int v = 0; v < ITEMS / V::kPer; ++v) {
      typename V::type raw;
      T* packed = reinterpret_cast<T*>(&raw);
#pragma unroll
      for (int i = 0; i < V::kPer; ++i) packed[i] = from_float<T>(vals[v * V::kPer + i]);
      *reinterpret_cast<typename V::type*>(row + base + v * V::kPer) = raw;
    }
  } else {
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      if (base + i < end) row[base + i] = from_float<T>(vals[i]);
    }
  }
}

// Asks L2 to fetch the line holding `ptr` (no register is written, nothing waits for it).
__device__ __forceinline__ void prefetch_l2(const void* ptr) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(ptr));
}

// One kernel instantiation: lanes per unit and the element types of (u, delta) and (B, C).
template <int TPR_, typename In, typename Bc>
struct Instance {
  static constexpr int TPR = TPR_;
  using in_t = In;
  using bc_t = Bc;
};

// Calls fn(Instance<TPR, in_t, bc_t>{}) for the instantiation a launch needs: B and C either
// share u's dtype or are fp32.
template <typename Fn>
void dispatch_instance(int tpr, int in_dtype, int bc_dtype, Fn&& fn) {
  auto with_tpr = [&](auto types) {
    using In = typename decltype(types)::in_t;
    using Bc = typename decltype(types)::bc_t;
    switch (tpr) {
      case 32: fn(Instance<32, In, Bc>{}); break;
      case 16: fn(Instance<16, In, Bc>{}); break;
      default: fn(Instance<8, In, Bc>{}); break;
    }
  };
  const bool bc_f32 = bc_dtype == kF32;
  switch (in_dtype) {
    case kF32: with_tpr(Instance<0, float, float>{}); break;
    case kF16:
      bc_f32 ? with_tpr(Instance<0, __half, float>{}) : with_tpr(Instance<0, __half, __half>{});
      break;
    case kBF16:
      bc_f32 ? with_tpr(Instance<0, __nv_bfloat16, float>{})
             : with_tpr(Instance<0, __nv_bfloat16, __nv_bfloat16>{});
      break;
    default: TORCH_CHECK(false, "selective_scan (CUDA): unsupported dtype code ", in_dtype);
  }
}

// Throws with the CUDA error of the last launch, if any; `what` and `pass` name the launch.
inline void check_launch(const char* what, const char* pass = "") {
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, what, pass, " CUDA launch failed: ", cudaGetErrorString(err));
}

// Launches one direction of the scan over all units of `p` (lanes_per_unit `tpr`): the
// segment-map pass first when rows are cut into segments, then the scan. `op` names the
// direction in launch errors.
template <typename Kernel>
void launch_passes(const char* op, Kernel segment_maps, Kernel scan, const ScanParams& p,
                   int tpr, cudaStream_t stream) {
  const int64_t units = p.batch * p.channels * p.num_segs;
  const int64_t units_per_block = kBlock / tpr;
  const auto blocks = static_cast<unsigned>((units + units_per_block - 1) / units_per_block);
  if (p.num_segs > 1) {
    segment_maps<<<blocks, kBlock, 0, stream>>>(p);
    check_launch(op, " (segment maps)");
  }
  scan<<<blocks, kBlock, 0, stream>>>(p);
  check_launch(op);
}

// Warps of `Kernel` (launched with kBlock threads) resident on the current GPU at once. Cached
// per kernel (a template argument, so each instantiation has its own cache) and device.
template <auto Kernel>
int64_t wave_warps() {
  constexpr int kMaxDevices = 64;
  static int64_t cache[kMaxDevices] = {};
  int device = 0;
  cudaGetDevice(&device);
  if (device < kMaxDevices && cache[device] > 0) return cache[device];
  int sms = 0, blocks = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, Kernel, kBlock, 0);
  const int64_t warps =
      static_cast<int64_t>(std::max(1, sms)) * std::max(1, blocks) * (kBlock / 32);
  if (device < kMaxDevices) cache[device] = warps;
  return warps;
}

// softplus with torch's threshold (20). log(1 + e^z) with the fast intrinsics: its absolute
// error (~1e-7 where e^z is tiny) is far below dt's scale, and log1pf, a long software
// sequence, made the scans issue-bound.
__device__ __forceinline__ float softplus(float z) {
  return z > 20.f ? z : __logf(1.f + __expf(z));
}
// The step dt of a position from its raw delta: delta + bias, through softplus when asked.
__device__ __forceinline__ float step_size(const ScanParams& p, float delta, float bias) {
  const float z = delta + bias;
  return p.softplus ? softplus(z) : z;
}

// softplus's derivative sigmoid(z) from its value dt = softplus(z): sigmoid(z) = 1 - e^{-dt}
// (so the backward need not keep z; where dt is tiny the error is below dt's own rounding).
__device__ __forceinline__ float softplus_grad_from_value(float dt) { return 1.f - __expf(-dt); }

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

// Geometry of one lane's unit: row (b * channels + c) and segment [begin, end).
struct UnitInfo {
  int lane;
  int64_t unit;  // seg * rows + row
  int64_t row;   // clamped to a valid row when !valid
  int64_t seg;
  bool valid;
  int64_t b, c, k;
  int64_t begin, end;
};

template <int TPR>
__device__ __forceinline__ UnitInfo unit_info(const ScanParams& p) {
  constexpr int kUnitsPerBlock = kBlock / TPR;
  const int64_t rows = p.batch * p.channels;
  UnitInfo r;
  r.lane = threadIdx.x % TPR;
  const int64_t unit = static_cast<int64_t>(blockIdx.x) * kUnitsPerBlock + threadIdx.x / TPR;
  r.valid = unit < rows * p.num_segs;
  r.unit = r.valid ? unit : 0;
  r.seg = r.unit / rows;
  r.row = r.unit % rows;
  r.b = r.row / p.channels;
  r.c = r.row % p.channels;
  r.k = r.c / p.per_group;
  r.begin = r.seg * p.seg_len;
  r.end = min(p.length, r.begin + p.seg_len);
  return r;
}

// The two coefficients of segment `seg`'s map of `row` (of `rows`) for state n in p.seg_maps.
__device__ __forceinline__ float* segment_map(const ScanParams& p, int64_t n, int64_t seg,
                                              int64_t row, int64_t rows) {
  return p.seg_maps + ((n * p.num_segs + seg) * rows + row) * 2;
}

// State entering segment `seg` of `row` for state n: the segments before it applied to h = 0.
__device__ __forceinline__ float segment_entry_state(const ScanParams& p, int64_t n,
                                                     int64_t row, int64_t seg) {
  const int64_t rows = p.batch * p.channels;
  float h = 0.f;
  for (int64_t s = 0; s < seg; ++s) {
    const float* m = segment_map(p, n, s, row, rows);
    h = m[0] * h + m[1];
  }
  return h;
}

// a_{end} * g_{end} for the position just past segment `seg` (0 past the row's end): the
// adjoint maps of the segments after it applied to v = 0, right to left.
__device__ __forceinline__ float segment_exit_adjoint(const ScanParams& p, int64_t n,
                                                      int64_t row, int64_t seg) {
  const int64_t rows = p.batch * p.channels;
  float v = 0.f;
  for (int64_t s = p.num_segs - 1; s > seg; --s) {
    const float* m = segment_map(p, n, s, row, rows);
    v = m[1] + m[0] * v;
  }
  return v;
}

#endif  // __CUDACC__

}  // namespace mmvmamba::cuda
