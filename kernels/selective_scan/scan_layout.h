// How the selective scan lays out its work and its checkpoints: plain C++ shared by the op
// registration (which exposes make_config to Python for tests), the CUDA host code and kernels
// (Python reads the stride through mmvmamba._C.state_stride()).
#pragma once

#include <algorithm>
#include <cstdint>

namespace mmvmamba {

// Positions between two stored states: the forward stores the state entering every position
// that is a multiple of kStateStride; every chunk of the backward starts on one.
constexpr int64_t kStateStride = 32;

// Checkpoints per row of `length` positions (constexpr: callable from CUDA device code too).
constexpr int64_t num_state_slots(int64_t length) {
  return (length + kStateStride - 1) / kStateStride;
}

// How one launch cuts the work (computed on the host by make_config).
struct LaunchConfig {
  int tpr;                 // lanes per unit: 8, 16 or 32
  int items;               // positions per lane per chunk: 4 or 8
  int64_t chunk;           // tpr * items
  int64_t num_segs;        // S
  int64_t seg_len;         // positions per segment, a multiple of chunk
  int64_t chunks_per_seg;  // seg_len / chunk
};

// Lanes per unit for rows of `length` positions: the fewest of 8, 16, 32 that cover a row in one
// chunk, else 32.
inline int lanes_per_unit(int64_t length, int items) {
  for (int t : {8, 16}) {
    if (static_cast<int64_t>(t) * items >= length) return t;
  }
  return 32;
}

// The work split of `rows` rows of `length` positions for a kernel of which `wave_warps` warps
// are resident on the whole GPU at once. Rows are cut into segments only when the uncut rows
// would fill less than 70% of one wave; then S is the count (at most three waves' worth) that
// fills the waves best, the smallest such S on ties.
inline LaunchConfig make_config(int64_t rows, int64_t length, int items, int64_t wave_warps) {
  LaunchConfig c{};
  c.items = items;
  c.tpr = lanes_per_unit(length, items);
  c.chunk = static_cast<int64_t>(c.tpr) * items;
  const int64_t chunks = (length + c.chunk - 1) / c.chunk;
  const int64_t row_warps = std::max<int64_t>(1, rows * c.tpr / 32);
  int64_t segs = 1;
  if (10 * row_warps < 7 * wave_warps) {
    double best_fill = 0.0;
    for (int64_t waves = 1; waves <= 3; ++waves) {
      const int64_t s = std::min(chunks, std::max<int64_t>(1, waves * wave_warps / row_warps));
      const int64_t warps = s * row_warps;
      const int64_t used_waves = (warps + wave_warps - 1) / wave_warps;
      const double fill = static_cast<double>(warps) / static_cast<double>(used_waves * wave_warps);
      if (fill > best_fill + 0.02) {
        best_fill = fill;
        segs = s;
      }
    }
  }
  c.chunks_per_seg = (chunks + segs - 1) / segs;
  c.num_segs = (chunks + c.chunks_per_seg - 1) / c.chunks_per_seg;
  c.seg_len = c.chunks_per_seg * c.chunk;
  return c;
}

}  // namespace mmvmamba
