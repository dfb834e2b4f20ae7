// The fused SS2D core's eager forward and backward, issued from C++: the same ATen ops, Triton
// kernels and arguments, in the same order, as `_forward` and `_backward` in
// mmvmamba/ops/triton/ss2d_core.py (whose module docstring describes the maps; its Python
// passes serve Triton's interpreter, torch.compile and launch hooks). The scan's launch shape
// (`ScanConfig`, SCAN_TUNING) is picked in Python and handed over as ints.

#include <torch/extension.h>

#include <algorithm>
#include <array>
#include <optional>
#include <vector>

#include "ss2d_core_host.h"

#include "layer_norm_2d_host.h"
#include "triton_launch.h"

namespace mmvmamba::triton_host {
namespace {

using at::Tensor;

constexpr int64_t kDirections = 4;
constexpr int64_t kRowAlign = 16;  // row stride multiple of the scan's maps (ROW_ALIGN)
constexpr int64_t kPairTile = 16;  // positions per side of a scan-order copy tile
constexpr int64_t kPairTileElements = 4096;
constexpr int64_t kCopyTile = 64;  // positions per side of a transpose tile (_TILE)
constexpr int64_t kEightWarpTile = 1024;  // transpose tiles this large take 8 warps
constexpr int64_t kSplitOrdersMinSide = 28;  // SPLIT_ORDERS_MIN_SIDE of transpose.py
constexpr int64_t kMaxProductParts = 256;  // MAX_PRODUCT_PARTS of ss2d_core.py

// `ScanConfig` of ss2d_core.py, in its field order, then `paired` (`_paired`).
struct ScanConfig {
  int64_t block_d, block_l, chunks, segments, chunks_per_segment, num_warps, dt_dot, bwd_block_d,
      bwd_num_warps, bwd_dt_dot, rank_block, stages, split_pair, paired;

  static ScanConfig from(const std::vector<int64_t>& v) {
    TORCH_CHECK(v.size() == 14, "ss2d_core: the scan config must have 14 fields, got ", v.size());
    return {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13]};
  }
};

int64_t row_stride(int64_t length) { return cdiv(length, kRowAlign) * kRowAlign; }

Tensor valid(const Tensor& row_map, int64_t length) { return row_map.narrow(-1, 0, length); }

// The kernels index one scan order of all images (``D * B * S`` elements) with int32 offsets;
// Python's `_check` says so first, with the way out.
void check_offsets(int64_t inner, int64_t batch, int64_t length) {
  TORCH_CHECK(inner * batch * row_stride(length) < (int64_t{1} << 31),
              "ss2d_core (fused): Din * B * S must be < 2**31 (S: H*W rounded up to a multiple "
              "of 16), got ", inner, " * ", batch, " * ", row_stride(length));
}

// A pair kernel (scan orders / merge orders, transpose.py `_launch_pair_kernel`) over the
// tiles of the ``(B, D, H, W)`` map ``x``: ``kernel(*maps, D, H, W, *strides)``.
void launch_pair_kernel(const char* kernel, const Tensor& x, const std::vector<Tensor>& maps,
                        const std::vector<int64_t>& strides, int64_t num_warps) {
  if (x.numel() == 0) return;
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t tile_h = std::min(kPairTile, next_power_of_2(height));
  const int64_t tile_w = std::min(kPairTile, next_power_of_2(width));
  const int64_t tile_d = std::min(next_power_of_2(channels),
                                  std::max<int64_t>(1, kPairTileElements / (tile_h * tile_w)));
  std::vector<Arg> args;
  for (const Tensor& map : maps) args.push_back(arg(map));
  for (const int64_t n : {channels, height, width}) args.push_back(arg(n));
  for (const int64_t s : strides) args.push_back(arg(s));
  launch(kernel, {batch * cdiv(channels, tile_d), cdiv(height, tile_h), cdiv(width, tile_w)},
         args, {{"TD", tile_d}, {"TH", tile_h}, {"TW", tile_w}, {"num_warps", num_warps}});
}

// ``dst[o, i, r, c] (+)= src[o, i, r, c]`` over the view ``(outer, inner, rows, cols)`` of two
// strided layouts (`_copy_tiles`): strides ``{outer, inner, row, col}`` of each.
void copy_tiles(const Tensor& src, const Tensor& dst, int64_t outer, int64_t inner, int64_t rows,
                int64_t cols, const std::array<int64_t, 4>& src_strides,
                const std::array<int64_t, 4>& dst_strides, bool accumulate) {
  if (outer * inner * rows * cols == 0) return;
  const int64_t tile_r = std::min(kCopyTile, next_power_of_2(rows));
  const int64_t tile_c = std::min(kCopyTile, next_power_of_2(cols));
  std::vector<Arg> args{arg(src), arg(dst), arg(inner), arg(rows), arg(cols)};
  for (const int64_t s : src_strides) args.push_back(arg(s));
  for (const int64_t s : dst_strides) args.push_back(arg(s));
  launch("copy_tiles", {outer * inner, cdiv(rows, tile_r), cdiv(cols, tile_c)}, args,
         {{"TR", tile_r}, {"TC", tile_c}, {"ACCUMULATE", accumulate, true},
          {"num_warps", tile_r * tile_c >= kEightWarpTile ? 8 : 4}});
}

// An image-minor ``(J, D, B, S)`` map as the ``(B, J, D, S)`` view the layout kernels take
// (`_image_major`).
Tensor image_major(const Tensor& pair) { return pair.permute({2, 0, 1, 3}); }

// ``x (B, D, H, W)`` written into a new image-minor pair ``(2, D, B, S)`` in both scan orders,
// the padding columns zeroed (`_scan_inputs` / `scan_orders_into`).
Tensor scan_inputs(const Tensor& x) {
  const int64_t length = x.size(2) * x.size(3);
  const Tensor storage =
      at::empty({2, x.size(1), x.size(0), row_stride(length)}, x.options());
  if (storage.size(3) > length) storage.narrow(3, length, storage.size(3) - length).zero_();
  const Tensor pair = image_major(storage);
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  if (std::min(height, width) >= kSplitOrdersMinSide && x.stride(1) == 1 &&
      x.stride(2) == width * x.stride(3)) {  // two plane transposes (`_split_orders`)
    copy_tiles(x, pair, batch, 1, length, channels, {x.stride(0), 0, x.stride(3), 1},
               {pair.stride(0), 0, 1, pair.stride(2)}, false);
    copy_tiles(x, pair.select(1, 1), batch, width, height, channels,
               {x.stride(0), x.stride(3), x.stride(2), 1},
               {pair.stride(0), height, 1, pair.stride(2)}, false);
    return storage;
  }
  launch_pair_kernel("scan_orders", x, {x, pair},
                     {x.stride(0), x.stride(1), x.stride(2), x.stride(3), pair.stride(0),
                      pair.stride(1), pair.stride(2)},
                     8);
  return storage;
}

// ``out[b, d, h, w] = p[b, 0, d, h*W + w] + p[b, 1, d, w*H + h]`` summed over the pairs ``p`` =
// ``pair``, ``addend`` (`merge_orders_into`).
Tensor merge_orders_into(const Tensor& pair, const Tensor& addend, const Tensor& out) {
  launch_pair_kernel("merge_orders", out, {pair, addend, out},
                     {pair.stride(0), pair.stride(1), pair.stride(2), addend.stride(0),
                      addend.stride(1), addend.stride(2), out.stride(0), out.stride(1),
                      out.stride(2), out.stride(3)},
                     4);
  return out;
}

// The transpose of each ``(cols, rows)`` plane of ``src (P, Q, cols*rows)`` written (or added)
// into ``dst (P, Q, rows*cols)`` (`transpose_into`).
void transpose_into(const Tensor& src, const Tensor& dst, int64_t rows, int64_t cols,
                    bool accumulate) {
  copy_tiles(src, dst, src.size(0), src.size(1), rows, cols,
             {src.stride(0), src.stride(1), 1, rows}, {dst.stride(0), dst.stride(1), cols, 1},
             accumulate);
}

// A ``(4, ...)`` tensor by direction as ``(2, 2, ...)`` by slot (`_slot_order`).
Tensor slot_order(const Tensor& t) {
  std::vector<int64_t> shape{2, 2};
  shape.insert(shape.end(), t.sizes().begin() + 1, t.sizes().end());
  return t.view(shape).transpose(0, 1);
}

// A ``(2, 2, ...)`` tensor by slot as a contiguous ``(4, ...)`` by direction
// (`_direction_order`).
Tensor direction_order(const Tensor& t) {
  std::vector<int64_t> shape{kDirections};
  shape.insert(shape.end(), t.sizes().begin() + 2, t.sizes().end());
  return t.transpose(0, 1).reshape(shape);
}

// ``(2, 2*(R+2), D)`` x-projection weights per scan order of ``xs`` (`_pair_weights`).
Tensor pair_weights(const Tensor& x_proj_weight, at::ScalarType dtype) {
  const int64_t rows = x_proj_weight.size(1), inner = x_proj_weight.size(2);
  const Tensor out = at::empty({2, 2, rows, inner}, x_proj_weight.options().dtype(dtype));
  out.copy_(slot_order(x_proj_weight));
  return out.view({2, 2 * rows, inner});
}

// ``(4, R+2, D)`` transposed dt-projection weights per slot, two zero rows for B and C
// (`_slot_dt_weights`).
Tensor slot_dt_weights(const Tensor& dt_projs_weight, at::ScalarType dtype) {
  const int64_t inner = dt_projs_weight.size(1), rank = dt_projs_weight.size(2);
  const Tensor out = at::zeros({2, 2, rank + 2, inner}, dt_projs_weight.options().dtype(dtype));
  out.narrow(2, 0, rank).copy_(slot_order(dt_projs_weight).transpose(2, 3));
  return out.view({kDirections, rank + 2, inner});
}

// The number of column parts of `block_products` (`_product_parts`, MAX_PRODUCT_PARTS).
int64_t product_parts(int64_t blocks, int64_t rows, int64_t cols, int64_t columns) {
  const int64_t bound = std::min<int64_t>(
      (rows + cols) * columns / (8 * blocks * rows * cols), kMaxProductParts);
  int64_t parts = 1;
  while (2 * parts <= bound && columns % (2 * parts * kRowAlign) == 0) parts *= 2;
  return parts;
}

// ``rows_j @ cols_j^T`` per block ``j`` in fp32, ``(J, M, N)`` from ``rows (J*M, C)`` and
// ``cols (J*N, C)``: one GEMM over the column parts of all blocks at once, summed, the
// diagonal blocks kept (`_block_products`).
Tensor block_products(const Tensor& rows, const Tensor& cols, int64_t blocks) {
  const int64_t m = rows.size(0) / blocks, n = cols.size(0) / blocks;
  const int64_t parts = product_parts(blocks, m, n, rows.size(1));
  const Tensor partial = at::bmm(rows.view({rows.size(0), parts, -1}).transpose(0, 1),
                                 cols.view({cols.size(0), parts, -1}).permute({1, 2, 0}));
  return partial.sum({0}, false, at::kFloat)
      .view({blocks, m, blocks, n})
      .diagonal(0, 0, 2)
      .permute({2, 0, 1});
}

// The compile-time arguments of a scan kernel (`_meta`).
std::vector<Meta> scan_meta(const ScanConfig& cfg, int64_t rank, bool backward) {
  return {{"R", rank},
          {"RP", std::max<int64_t>(16, next_power_of_2(rank))},
          {"BD", backward ? cfg.bwd_block_d : cfg.block_d},
          {"BL", cfg.block_l},
          {"DT_DOT", backward ? cfg.bwd_dt_dot : cfg.dt_dot, true},
          {"RB", cfg.rank_block},
          {"NS", cfg.stages},
          {"num_warps", backward ? cfg.bwd_num_warps : cfg.num_warps}};
}

// A scan kernel (`_launch`): paired, one launch or the two of a split pair; unpaired, the
// segment-summary launch and the scan.
void launch_scan(const char* kernel, const ScanConfig& cfg, int64_t batch, int64_t inner,
                 const std::vector<Arg>& args, std::vector<Meta> meta) {
  const int64_t channel_blocks = cdiv(inner, meta[2].value);
  meta.push_back({"SUMMARY", 0, true});
  meta.push_back({"PAIRED", 0});
  if (cfg.paired) {
    const int64_t first = cfg.split_pair ? 2 : 1, last = cfg.split_pair ? 3 : 1;
    for (int64_t phase = first; phase <= last; ++phase) {
      meta.back().value = phase;
      launch(kernel, {channel_blocks, batch, 2}, args, meta);
    }
    return;
  }
  const std::array<int64_t, 3> grid{channel_blocks, batch, kDirections * cfg.segments};
  if (cfg.segments > 1) {
    meta[meta.size() - 2].value = 1;  // SUMMARY
    launch(kernel, grid, args, meta);
    meta[meta.size() - 2].value = 0;
  }
  launch(kernel, grid, args, meta);
}

at::TensorOptions f32(const Tensor& like) { return like.options().dtype(at::kFloat); }

// A map the scan kernels write (paired: every element stored) or add into (zeroed).
Tensor new_map(at::IntArrayRef size, const at::TensorOptions& options, bool zeroed) {
  return zeroed ? at::zeros(size, options) : at::empty(size, options);
}

// A second map of segment summaries like ``seg_decay`` (itself with one segment).
Tensor segment_scratch(const Tensor& seg_decay, const ScanConfig& cfg) {
  return cfg.segments > 1 ? at::empty_like(seg_decay) : seg_decay;
}

// The forward (`_forward`): ``out, proj, y, stats, states, seg_decay, xs``. ``config``: the
// `ScanConfig` fields as ints, then `paired`.
std::vector<Tensor> core_forward(const Tensor& x, const Tensor& x_proj_weight,
                                 const Tensor& dt_projs_weight, const Tensor& dt_projs_bias,
                                 const Tensor& A_logs, const Tensor& Ds,
                                 const Tensor& out_norm_weight, const Tensor& out_norm_bias,
                                 double eps, int64_t rank, const std::vector<int64_t>& config) {
  const ScanConfig cfg = ScanConfig::from(config);
  // The GEMMs run in the map's dtype whatever autocast says (as `autocast_off`).
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const int64_t batch = x.size(0), inner = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t length = height * width;
  check_offsets(inner, batch, length);
  const Tensor xs = scan_inputs(x);
  const int64_t stride = xs.size(3);
  const Tensor proj = at::bmm(pair_weights(x_proj_weight, x.scalar_type()),
                              xs.view({2, inner, batch * stride}))
                          .view({kDirections, rank + 2, batch, stride});
  const Tensor y = new_map({batch, inner, stride}, f32(x), !cfg.paired);
  const Tensor yt = new_map({batch, inner, stride}, f32(x), !cfg.paired);
  const Tensor states = at::empty({batch, kDirections, inner, cfg.chunks}, f32(x));
  const Tensor seg_decay = at::empty({batch, kDirections, cfg.segments, inner}, f32(x));
  const Tensor seg_state = segment_scratch(seg_decay, cfg);
  const Tensor wdt = dt_projs_weight.contiguous(), bias = dt_projs_bias.contiguous(),
               a_logs = A_logs.contiguous(), ds = Ds.contiguous();
  launch_scan("ss2d_scan_fwd", cfg, batch, inner,
              {arg(xs), arg(proj), arg(wdt), arg(bias), arg(a_logs), arg(ds), arg(y), arg(yt),
               arg(states), arg(seg_decay), arg(seg_state), arg(inner), arg(length), arg(stride),
               arg(cfg.chunks), arg(cfg.segments), arg(cfg.chunks_per_segment)},
              scan_meta(cfg, rank, /*backward=*/false));
  const Tensor y_valid = valid(y, length);
  transpose_into(valid(yt, length), y_valid, height, width, /*accumulate=*/true);
  const Tensor out = at::empty_like(x);
  const Tensor stats = ln2d_forward(y_valid, out_norm_weight, out_norm_bias, eps, flat(out));
  return {out, proj, y, stats, states, seg_decay, xs};
}

// The backward (`_backward`): gradients of x and the two projection weights, of the dt bias,
// A_logs and Ds as one ``(3, 4, D)`` fp32 tensor, of the out-norm's weight and bias as ``(2, D)``.
// ``xs``: the forward's pair of scan orders of x; x's shape and layout are the output gradient's.
std::vector<Tensor> core_backward(const Tensor& grad_output, const Tensor& xs,
                                  const Tensor& x_proj_weight, const Tensor& dt_projs_weight,
                                  const Tensor& dt_projs_bias, const Tensor& A_logs,
                                  const Tensor& Ds, const Tensor& out_norm_weight,
                                  const Tensor& proj, const Tensor& y, const Tensor& stats,
                                  const Tensor& states, const Tensor& seg_decay, int64_t rank,
                                  const std::vector<int64_t>& config) {
  const ScanConfig cfg = ScanConfig::from(config);
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const Tensor grad_out = dense_2d(grad_output);
  const int64_t batch = grad_out.size(0), inner = grad_out.size(1), height = grad_out.size(2),
                width = grad_out.size(3);
  const int64_t length = height * width;
  check_offsets(inner, batch, length);
  const int64_t rows = rank + 2;
  // The output gradient through the norm, in both scan orders, image-minor as xs (see
  // `_backward`): (2, D, B, S).
  const Tensor grad_ys = at::empty({2, inner, batch, row_stride(length)}, f32(xs));
  const Tensor grad_valid = valid(image_major(grad_ys), length);
  const Tensor grad_y = grad_valid.select(1, 0), grad_yt = grad_valid.select(1, 1);
  const Tensor grad_norm =
      ln2d_backward(flat(grad_out), valid(y, length), out_norm_weight, stats, grad_y);
  transpose_into(grad_y, grad_yt, width, height, /*accumulate=*/false);
  const Tensor grad_xs = new_map({2, inner, batch, row_stride(length)}, f32(xs), !cfg.paired);
  // Image-minor, by slot (see `_backward`).
  const Tensor grad_proj = at::zeros({kDirections, rows, batch, row_stride(length)}, f32(xs));
  const int64_t stride = grad_proj.size(3);
  Tensor grad_z = at::empty({kDirections, inner, batch, stride}, xs.options());
  const Tensor grad_chan = at::empty({3, batch, kDirections, cfg.segments, inner}, f32(xs));
  const Tensor wdt = dt_projs_weight.contiguous(), bias = dt_projs_bias.contiguous(),
               a_logs = A_logs.contiguous(), ds = Ds.contiguous();
  const Tensor seg_carry = segment_scratch(seg_decay, cfg);
  launch_scan("ss2d_scan_bwd", cfg, batch, inner,
              {arg(xs), arg(proj), arg(wdt), arg(bias), arg(a_logs), arg(ds), arg(grad_ys),
               arg(states), arg(seg_decay), arg(seg_carry), arg(grad_xs), arg(grad_z),
               arg(grad_proj), arg(grad_chan), arg(inner), arg(length), arg(stride),
               arg(cfg.chunks), arg(cfg.segments), arg(cfg.chunks_per_segment)},
              scan_meta(cfg, rank, /*backward=*/true));
  // The dt projection's input and weight gradients (see `_backward`; sums over all columns,
  // the padding zero).
  grad_proj.view({kDirections, rows, -1})
      .add_(at::bmm(slot_dt_weights(dt_projs_weight, xs.scalar_type()),
                    grad_z.view({kDirections, inner, -1})));
  const Tensor grad_wdt = block_products(proj.view({kDirections * rows, -1}),
                                         grad_z.view({kDirections * inner, -1}), kDirections)
                              .narrow(1, 0, rank)
                              .transpose(1, 2);
  grad_z.reset();
  // The x projection, per scan order, in x's dtype, added in the merge.
  const Tensor grad_proj_x = grad_proj.to(xs.scalar_type()).view({2, 2 * rows, -1});
  const Tensor grad_xs_proj =
      at::bmm(pair_weights(x_proj_weight, xs.scalar_type()).transpose(1, 2), grad_proj_x)
          .view(xs.sizes());
  const Tensor grad_x =
      merge_orders_into(image_major(grad_xs), image_major(grad_xs_proj), at::empty_like(grad_out));
  const Tensor grad_w_slots =
      block_products(grad_proj_x.view({kDirections * rows, -1}), xs.view({2 * inner, -1}), 2);
  return {grad_x,
          direction_order(grad_w_slots.view({2, 2, rows, inner})).to(x_proj_weight.scalar_type()),
          direction_order(grad_wdt.unflatten(0, {2, 2})).to(dt_projs_weight.scalar_type()),
          grad_chan.sum({1, 3}), grad_norm};
}

// The eager autograd of the fused core (as `_Core` in ss2d_core.py).
struct Core : public torch::autograd::Function<Core> {
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x,
                        const Tensor& x_proj_weight, const Tensor& dt_projs_weight,
                        const Tensor& dt_projs_bias, const Tensor& A_logs, const Tensor& Ds,
                        const Tensor& out_norm_weight, const Tensor& out_norm_bias, double eps,
                        int64_t rank, const std::vector<int64_t>& config) {
    const auto outputs = core_forward(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs,
                                      Ds, out_norm_weight, out_norm_bias, eps, rank, config);
    // The pair of scan orders in x's place (as `_core_setup`).
    ctx->save_for_backward({outputs[6], x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds,
                            out_norm_weight, outputs[1], outputs[2], outputs[3], outputs[4],
                            outputs[5]});
    ctx->saved_data["rank"] = rank;
    ctx->saved_data["config"] = config;
    std::vector<Tensor> vectors{dt_projs_bias, A_logs, Ds, out_norm_weight, out_norm_bias};
    for (size_t k = 0; k < vectors.size(); ++k) {
      ctx->saved_data["shape" + std::to_string(k)] = vectors[k].sizes().vec();
      ctx->saved_data["dtype" + std::to_string(k)] = vectors[k].scalar_type();
    }
    return outputs[0];
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const auto g = core_backward(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8],
                                 s[9], s[10], s[11], ctx->saved_data["rank"].toInt(),
                                 ctx->saved_data["config"].toIntVector());
    // The (3, 4, D) and (2, D) fp32 sums as each vector parameter's gradient (`_gradients`).
    const std::vector<Tensor> vectors{g[3][0], g[3][1], g[3][2], g[4][0], g[4][1]};
    torch::autograd::variable_list result{g[0], g[1], g[2]};
    for (size_t k = 0; k < vectors.size(); ++k) {
      result.push_back(vectors[k]
                           .view(ctx->saved_data["shape" + std::to_string(k)].toIntVector())
                           .to(ctx->saved_data["dtype" + std::to_string(k)].toScalarType()));
    }
    result.resize(11);  // eps, rank, config: no gradient
    return result;
  }
};

}  // namespace

void register_ss2d_core(pybind11::module_& m) {
  m.def(
      "ss2d_core",
      [](const Tensor& x, const Tensor& x_proj_weight, const Tensor& dt_projs_weight,
         const Tensor& dt_projs_bias, const Tensor& A_logs, const Tensor& Ds,
         const Tensor& out_norm_weight, const Tensor& out_norm_bias, double eps, int64_t rank,
         const std::vector<int64_t>& config) {
        return Core::apply(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds,
                           out_norm_weight, out_norm_bias, eps, rank, config);
      },
      "The fused SS2D core with autograd, issued from C++: the arguments of ss2d_core_fused "
      "(validated by it), the dt rank and the scan config (ScanConfig fields, then paired).");
  m.def("ss2d_core_forward", &core_forward,
        "The fused core's forward without autograd (for the torch.compile custom op): "
        "[out, proj, y, stats, states, seg_decay, xs], as ss2d_core.py `_forward`.");
  m.def("ss2d_core_backward", &core_backward,
        "The fused core's backward without autograd (for the torch.compile custom op), as "
        "ss2d_core.py `_backward`.");
}

}  // namespace mmvmamba::triton_host
