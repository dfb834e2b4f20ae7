// The Triton LayerNorm2d's launchers and eager autograd in C++ (see layer_norm_2d_host.cpp).
#pragma once

#include <torch/extension.h>

#include <optional>
#include <tuple>

namespace mmvmamba::triton_host {

// ``x (B, C, H, W)`` itself if contiguous or channels-last, else a contiguous copy.
at::Tensor dense_2d(const at::Tensor& x);

// The ``(B, C, H*W)`` view of a contiguous or channels-last ``(B, C, H, W)`` map.
at::Tensor flat(const at::Tensor& x);

// (channels per program, positions per tile, the backward's tiles per program, its warps).
using LayerNorm2dLaunch = std::tuple<int64_t, int64_t, int64_t, int64_t>;

// The launch shape for a map whose position stride is 1 or not; the same arithmetic as
// mmvmamba/ops/triton/layer_norm_2d.py `_blocks` (a test compares the two).
LayerNorm2dLaunch layer_norm_2d_blocks(int64_t channels, int64_t length,
                                       bool positions_contiguous);

// Forward kernel over ``x (B, C, L)`` (any strides with unit stride along C or L) into ``out``;
// returns ``stats (2, B, L)`` fp32 (mean, rstd). As `ln2d_forward` in layer_norm_2d.py.
at::Tensor ln2d_forward(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                        const std::optional<at::Tensor>& bias, double eps, const at::Tensor& out);

// Backward kernel: the input gradient into ``grad_x (B, C, L)``; returns the affine gradients
// ``(2, C)`` fp32 (weight, bias). As `ln2d_backward` in layer_norm_2d.py.
at::Tensor ln2d_backward(const at::Tensor& grad_out, const at::Tensor& x,
                         const std::optional<at::Tensor>& weight, const at::Tensor& stats,
                         const at::Tensor& grad_x);

// Adds `layer_norm_2d` and `layer_norm_2d_blocks` to the extension module.
void register_layer_norm_2d(pybind11::module_& m);

}  // namespace mmvmamba::triton_host
