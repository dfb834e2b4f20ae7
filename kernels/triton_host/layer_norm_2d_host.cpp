// The Triton LayerNorm2d's launchers and its eager autograd, issued from C++: the same kernels
// and arguments as mmvmamba/ops/triton/layer_norm_2d.py (whose Python passes Triton's
// interpreter, torch.compile and launch hooks use).

#include "layer_norm_2d_host.h"

#include <algorithm>

#include "triton_launch.h"

namespace mmvmamba::triton_host {

namespace {

constexpr int64_t kTileElements = 4096;  // channels x positions held by one program
constexpr int64_t kFwdWarps = 4, kBwdWarps = 4;
// The backward walks kBwdBlocks tiles per program where the channels (padded) are at most
// kBwdBlocksMaxChannels and an image has at least kBwdBlocksMinTiles tiles, else one.
constexpr int64_t kBwdBlocks = 4;
constexpr int64_t kBwdBlocksMaxChannels = 512;
constexpr int64_t kBwdBlocksMinTiles = 32;
// Maps with contiguous positions and at least kRowsMinChannels (padded) channels: at least
// kRowsMinPositions positions per tile, kRowsBwdWarps warps in the backward.
constexpr int64_t kRowsMinChannels = 1024;
constexpr int64_t kRowsMinPositions = 8;
constexpr int64_t kRowsBwdWarps = 8;

bool present(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

}  // namespace

at::Tensor dense_2d(const at::Tensor& x) {
  if (x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast)) return x;
  return x.contiguous();
}

at::Tensor flat(const at::Tensor& x) { return x.view({x.size(0), x.size(1), -1}); }

LayerNorm2dLaunch layer_norm_2d_blocks(int64_t channels, int64_t length,
                                       bool positions_contiguous) {
  const int64_t block_c = next_power_of_2(channels);
  const bool rows = positions_contiguous && block_c >= kRowsMinChannels;
  const int64_t min_positions = rows ? kRowsMinPositions : 1;
  const int64_t block_p =
      std::min(next_power_of_2(length), std::max(min_positions, kTileElements / block_c));
  const bool walks =
      block_c <= kBwdBlocksMaxChannels && cdiv(length, block_p) >= kBwdBlocksMinTiles;
  return {block_c, block_p, walks ? kBwdBlocks : 1, rows ? kRowsBwdWarps : kBwdWarps};
}

at::Tensor ln2d_forward(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                        const std::optional<at::Tensor>& bias, double eps,
                        const at::Tensor& out) {
  const int64_t batch = x.size(0), channels = x.size(1), length = x.size(2);
  const at::Tensor stats = at::empty({2, batch, length}, x.options().dtype(at::kFloat));
  const auto [block_c, block_p, per_program, bwd_warps] =
      layer_norm_2d_blocks(channels, length, x.stride(2) == 1);
  const at::Tensor w = present(weight) ? weight->contiguous() : x;
  const at::Tensor b = present(bias) ? bias->contiguous() : x;
  launch("layer_norm_2d_fwd", {cdiv(length, block_p), batch, 1},
         {arg(x), arg(w), arg(b), arg(out), arg(stats), arg(channels), arg(length), arg(eps),
          arg(x.stride(0)), arg(x.stride(1)), arg(x.stride(2)), arg(out.stride(0)),
          arg(out.stride(1)), arg(out.stride(2))},
         {{"BC", block_c}, {"BP", block_p}, {"HAS_WEIGHT", present(weight), true},
          {"HAS_BIAS", present(bias), true}, {"num_warps", kFwdWarps}});
  return stats;
}

at::Tensor ln2d_backward(const at::Tensor& grad_out, const at::Tensor& x,
                         const std::optional<at::Tensor>& weight, const at::Tensor& stats,
                         const at::Tensor& grad_x) {
  const int64_t batch = x.size(0), channels = x.size(1), length = x.size(2);
  const auto [block_c, block_p, per_program, bwd_warps] =
      layer_norm_2d_blocks(channels, length, x.stride(2) == 1);
  const int64_t programs = cdiv(cdiv(length, block_p), per_program);
  const at::Tensor partial =
      at::empty({batch * programs, 2, channels}, x.options().dtype(at::kFloat));
  const at::Tensor w = present(weight) ? weight->contiguous() : x;
  launch("layer_norm_2d_bwd", {programs, batch, 1},
         {arg(grad_out), arg(x), arg(w), arg(stats), arg(grad_x), arg(partial), arg(channels),
          arg(length), arg(grad_out.stride(0)), arg(grad_out.stride(1)), arg(grad_out.stride(2)),
          arg(x.stride(0)), arg(x.stride(1)), arg(x.stride(2)), arg(grad_x.stride(0)),
          arg(grad_x.stride(1)), arg(grad_x.stride(2))},
         {{"BC", block_c}, {"BP", block_p}, {"PB", per_program},
          {"HAS_WEIGHT", present(weight), true}, {"num_warps", bwd_warps}});
  return partial.sum(0);
}

namespace {

// The eager autograd of mmvmamba.ops.triton.layer_norm_2d (as its Python `_LayerNorm2d`).
struct LayerNorm2d : public torch::autograd::Function<LayerNorm2d> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input,
                            const std::optional<at::Tensor>& weight,
                            const std::optional<at::Tensor>& bias, double eps) {
    const at::Tensor x = dense_2d(input);
    const at::Tensor out = at::empty_like(x);
    const at::Tensor stats = ln2d_forward(flat(x), weight, bias, eps, flat(out));
    ctx->save_for_backward({x, present(weight) ? *weight : at::Tensor(), stats});
    ctx->saved_data["weight_dtype"] = present(weight) ? weight->scalar_type() : at::kFloat;
    ctx->saved_data["bias_dtype"] = present(bias) ? bias->scalar_type() : at::kFloat;
    ctx->saved_data["has_bias"] = present(bias);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const std::optional<at::Tensor> weight =
        saved[1].defined() ? std::optional<at::Tensor>(saved[1]) : std::nullopt;
    const at::Tensor grad_x = at::empty_like(x);
    const at::Tensor affine =
        ln2d_backward(flat(dense_2d(grads[0])), flat(x), weight, saved[2], flat(grad_x));
    at::Tensor grad_w, grad_b;
    if (weight) grad_w = affine[0].to(ctx->saved_data["weight_dtype"].toScalarType());
    if (ctx->saved_data["has_bias"].toBool()) {
      grad_b = affine[1].to(ctx->saved_data["bias_dtype"].toScalarType());
    }
    return {grad_x, grad_w, grad_b, at::Tensor()};
  }
};

}  // namespace

void register_layer_norm_2d(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("layer_norm_2d_blocks", &layer_norm_2d_blocks, py::arg("channels"), py::arg("length"),
        py::arg("positions_contiguous"),
        "(BC, BP, PB, backward warps) of the LayerNorm2d kernels as the C++ passes pick them "
        "(for tests).");
  m.def(
      "layer_norm_2d",
      [](const at::Tensor& x, const std::optional<at::Tensor>& weight,
         const std::optional<at::Tensor>& bias,
         double eps) { return LayerNorm2d::apply(x, weight, bias, eps); },
      py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("eps"),
      "Channel-first LayerNorm of a (B, C, H, W) map with autograd, issued from C++.");
}

}  // namespace mmvmamba::triton_host
