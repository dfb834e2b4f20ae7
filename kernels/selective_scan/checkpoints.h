// The checkpoint layout of selective_scan_fwd_train, shared by the op registration, the CUDA
// host code and kernels (Python reads it through mmvmamba._C.state_stride()).
#pragma once

#include <cstdint>

namespace mmvmamba {

// Positions between two stored states: the forward stores the state entering every position
// that is a multiple of kStateStride; every chunk of the backward starts on one.
constexpr int64_t kStateStride = 32;

// Checkpoints per row of `length` positions (constexpr: callable from CUDA device code too).
constexpr int64_t num_state_slots(int64_t length) {
  return (length + kStateStride - 1) / kStateStride;
}

}  // namespace mmvmamba
