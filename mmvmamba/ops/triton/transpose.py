"""Layout copies of maps through Triton for the fused SS2D core.

The core scans its row-major directions over a channel-major ``(B, D, H*W)`` map and its
column-major ones over a transposed ``(B, D, W*H)`` copy, kept together as one *pair* of maps
``(B, 2, D, S)`` (``S >= H*W``, the padded row stride), while the backbone keeps its maps in
channels-last memory (``(B, D, H, W)`` with strides of ``(B, H, W, D)``):

- :func:`scan_orders_into` writes a map of any strides into both orders of a pair (one read,
  two writes), :func:`merge_orders_into` adds two pairs' orders back into one map of any
  strides (the input gradient): one kernel each, on ``(channels, rows, columns)`` tiles, so the
  read and both writes stay coalesced whichever axis is contiguous; a large channels-last map
  is written into its orders by two plane transposes instead (longer contiguous runs: see
  :data:`SPLIT_ORDERS_MIN_SIDE`);
- :func:`transpose_into` writes or adds the transpose of each plane of a map (the merge of the
  scans' outputs, the output gradient for the column-major scans), in ``TR x TC`` tiles
  (``.contiguous()`` of a permuted view strides one side, and PyTorch's generic copy kernel is
  several times slower).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import cdiv, launch, next_power_of_2

__all__ = ['transpose_into', 'scan_orders_into', 'merge_orders_into', 'dense_2d', 'flat']

#: Side of a plane transpose's tile (rows and columns, each capped at the plane's next power
#: of two), and the tile size from which it takes 8 warps instead of 4. Run 84 (H100, fp32
#: planes at VMamba-B's batch 128, transposed add): 56x56 planes 585 -> 422 us (32-tiles of 4
#: warps -> 64-tiles of 8), 28x28 244 -> 219 (8 warps), 14x14 139 either way with 4 warps
#: (8 warps: 203).
_TILE = 64
_EIGHT_WARP_TILE = 1024
#: Smallest side (H and W) from which a channels-last map's scan orders are written as two
#: plane transposes (positions x channels tiles, contiguous on both sides) rather than by one
#: pass of (channels, rows, columns) tiles. Run 84 (fp16, batch 128): 56x56 at 256 channels
#: 1038 -> 367 us, 28x28 at 512 500 -> 219; at 14x14 (1024) 136 -> 267: slower.
SPLIT_ORDERS_MIN_SIDE = 28


class Strides(NamedTuple):
    """Element strides of a 4-index view ``[outer, inner, row, col]`` of a tensor."""

    outer: int
    inner: int
    row: int
    col: int


@triton.jit
def _copy_tiles_kernel(src_ptr, dst_ptr, INNER, ROWS, COLS,
                       s_outer, s_inner, s_row, s_col, d_outer, d_inner, d_row, d_col,
                       TR: tl.constexpr, TC: tl.constexpr, ACCUMULATE: tl.constexpr):
    """``dst[o, i, r, c] (+)= src[o, i, r, c]`` for two strided layouts of the same 4-index view;
    grid ``(OUTER * INNER, cdiv(ROWS, TR), cdiv(COLS, TC))``."""
    plane = tl.program_id(0)
    outer = (plane // INNER).to(tl.int64)
    inner = (plane % INNER).to(tl.int64)
    rows = tl.program_id(1) * TR + tl.arange(0, TR)
    cols = tl.program_id(2) * TC + tl.arange(0, TC)
    mask = (rows[:, None] < ROWS) & (cols[None, :] < COLS)
    src = (src_ptr + outer * s_outer + inner * s_inner + rows[:, None] * s_row
           + cols[None, :] * s_col)
    dst = (dst_ptr + outer * d_outer + inner * d_inner + rows[:, None] * d_row
           + cols[None, :] * d_col)
    value = tl.load(src, mask=mask, other=0.0)
    if ACCUMULATE:
        value = value.to(tl.float32) + tl.load(dst, mask=mask, other=0.0)
    tl.store(dst, value.to(dst_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _pair_offsets(D, H, W, TD: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr):
    """This program's image (int64) and its ``(TD, TH, TW)`` tile of channels, rows and
    columns, with the tile's mask; grid ``(B * cdiv(D, TD), cdiv(H, TH), cdiv(W, TW))``."""
    blocks = tl.cdiv(D, TD)
    b = (tl.program_id(0) // blocks).to(tl.int64)
    d = (tl.program_id(0) % blocks) * TD + tl.arange(0, TD)[:, None, None]
    h = tl.program_id(1) * TH + tl.arange(0, TH)[None, :, None]
    w = tl.program_id(2) * TW + tl.arange(0, TW)[None, None, :]
    return b, d, h, w, (d < D) & (h < H) & (w < W)


@triton.jit
def _scan_orders_kernel(src_ptr, dst_ptr, D, H, W, s_b, s_d, s_h, s_w, d_b, d_pair, d_d,
                        TD: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr):
    """``dst[b, 0, d, h*W + w] = dst[b, 1, d, w*H + h] = src[b, d, h, w]`` (one read of each
    element, two coalesced writes)."""
    b, d, h, w, mask = _pair_offsets(D, H, W, TD, TH, TW)
    value = tl.load(src_ptr + b * s_b + d * s_d + h * s_h + w * s_w, mask=mask)
    value = value.to(dst_ptr.dtype.element_ty)
    dst = dst_ptr + b * d_b + d * d_d
    tl.store(dst + h * W + w, value, mask=mask)
    tl.store(dst + d_pair + w * H + h, value, mask=mask)


@triton.jit
def _merge_orders_kernel(src_ptr, add_ptr, dst_ptr, D, H, W, s_b, s_pair, s_d, a_b, a_pair, a_d,
                         d_b, d_d, d_h, d_w,
                         TD: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr):
    """``dst[b, d, h, w] = p[b, 0, d, h*W + w] + p[b, 1, d, w*H + h]`` summed over the two pairs
    ``p`` = ``src``, ``add`` (in fp32, stored in ``dst``'s dtype)."""
    b, d, h, w, mask = _pair_offsets(D, H, W, TD, TH, TW)
    src = src_ptr + b * s_b + d * s_d
    add = add_ptr + b * a_b + d * a_d
    value = (tl.load(src + h * W + w, mask=mask).to(tl.float32)
             + tl.load(src + s_pair + w * H + h, mask=mask).to(tl.float32)
             + tl.load(add + h * W + w, mask=mask).to(tl.float32)
             + tl.load(add + a_pair + w * H + h, mask=mask).to(tl.float32))
    tl.store(dst_ptr + b * d_b + d * d_d + h * d_h + w * d_w,
             value.to(dst_ptr.dtype.element_ty), mask=mask)


def _launch_pair_kernel(kernel, x: Tensor, maps: tuple, strides: tuple, num_warps: int) -> None:
    """Launch a pair kernel (``kernel(*maps, D, H, W, *strides)``) over the tiles of the
    ``(B, D, H, W)`` map ``x``: up to 16 x 16 positions and 4096 elements a tile."""
    batch, channels, height, width = x.shape
    if x.numel() == 0:
        return
    tile_h = min(16, next_power_of_2(height))
    tile_w = min(16, next_power_of_2(width))
    tile_d = min(next_power_of_2(channels), max(1, 4096 // (tile_h * tile_w)))
    grid = (batch * cdiv(channels, tile_d), cdiv(height, tile_h), cdiv(width, tile_w))
    launch(kernel, grid, (*maps, channels, height, width, *strides),
           dict(TD=tile_d, TH=tile_h, TW=tile_w, num_warps=num_warps))


def _pair_map_strides(pair: Tensor, x: Tensor, name: str) -> tuple[int, int, int]:
    """Batch, order and channel strides of ``pair``, a ``(B, 2, D, >= H*W)`` map with unit
    position stride, for the ``(B, D, H, W)`` map ``x``."""
    batch, channels, height, width = x.shape
    if (pair.dim() != 4 or pair.shape[:3] != (batch, 2, channels)
            or pair.shape[3] < height * width or pair.stride(3) != 1):
        raise ValueError(f'{name}: the pair map must be (B, 2, D, >= H*W) = '
                         f'{(batch, 2, channels, height * width)} with unit stride along '
                         f'positions, got {tuple(pair.shape)} with strides {pair.stride()}')
    return pair.stride(0), pair.stride(1), pair.stride(2)


def scan_orders_into(x: Tensor, out: Tensor) -> Tensor:
    """Write ``x (B, D, H, W)`` (any strides) into ``out (B, 2, D, S)`` (``S >= H*W``) in both
    scan orders: ``out[:, 0]`` row-major positions ``h*W + w``, ``out[:, 1]`` column-major
    ``w*H + h``, cast to ``out.dtype``; columns past ``H*W`` are left as they are.

    A channels-last ``x`` with both sides at least :data:`SPLIT_ORDERS_MIN_SIDE` is written
    by two plane transposes: its ``(H*W, D)`` plane into the row-major order, its ``W``
    planes ``(H, D)`` into the column-major one (``x`` read twice, every access along a
    contiguous run of 64); any other map by one pass of the pair kernel (one read, 8 warps).

    Returns:
        Tensor: ``out``.
    """
    pair_strides = _pair_map_strides(out, x, 'scan_orders_into')
    if _split_orders(x):
        batch, channels, height, width = x.shape
        s_b, _, s_d = pair_strides
        _copy_tiles(x, out, (batch, 1, height * width, channels),
                    Strides(x.stride(0), 0, x.stride(3), 1), Strides(s_b, 0, 1, s_d))
        _copy_tiles(x, out.select(1, 1), (batch, width, height, channels),
                    Strides(x.stride(0), x.stride(3), x.stride(2), 1), Strides(s_b, height, 1, s_d))
        return out
    _launch_pair_kernel(_scan_orders_kernel, x, (x, out), (*x.stride(), *pair_strides), 8)
    return out


def _split_orders(x: Tensor) -> bool:
    """Does :func:`scan_orders_into` write ``x (B, D, H, W)``'s orders by two plane transposes?
    Where its channels are contiguous, its positions one stride apart in row-major order
    (``stride(2) == W * stride(3)``) and both sides at least :data:`SPLIT_ORDERS_MIN_SIDE`."""
    _, _, height, width = x.shape
    return (min(height, width) >= SPLIT_ORDERS_MIN_SIDE and x.stride(1) == 1
            and x.stride(2) == width * x.stride(3))


def merge_orders_into(pair: Tensor, addend: Tensor, out: Tensor) -> Tensor:
    """``out[b, d, h, w] = p[b, 0, d, h*W + w] + p[b, 1, d, w*H + h]`` summed over ``p`` =
    ``pair``, ``addend``: two pairs of scan-order maps (each ``(B, 2, D, >= H*W)`` with unit
    position stride, any dtypes; the core's input gradient from the scans and from the x
    projection) added back into one ``(B, D, H, W)`` map of any strides (e.g. channels-last),
    in fp32, cast to ``out.dtype``.

    Returns:
        Tensor: ``out``.
    """
    strides = (*_pair_map_strides(pair, out, 'merge_orders_into'),
               *_pair_map_strides(addend, out, 'merge_orders_into'), *out.stride())
    _launch_pair_kernel(_merge_orders_kernel, out, (pair, addend, out), strides, 4)
    return out


def _copy_tiles(src: Tensor, dst: Tensor, sizes: tuple[int, int, int, int], src_strides: Strides,
                dst_strides: Strides, accumulate: bool = False) -> Tensor:
    """Launch :func:`_copy_tiles_kernel` over the view ``sizes = (outer, inner, rows, cols)``."""
    outer, inner, rows, cols = sizes
    if outer * inner * rows * cols == 0:
        return dst
    tile_r = min(_TILE, next_power_of_2(rows))
    tile_c = min(_TILE, next_power_of_2(cols))
    grid = (outer * inner, cdiv(rows, tile_r), cdiv(cols, tile_c))
    launch(_copy_tiles_kernel, grid, (src, dst, inner, rows, cols, *src_strides, *dst_strides),
           dict(TR=tile_r, TC=tile_c, ACCUMULATE=accumulate,
                num_warps=8 if tile_r * tile_c >= _EIGHT_WARP_TILE else 4))
    return dst


def transpose_into(src: Tensor, dst: Tensor, rows: int, cols: int,
                   accumulate: bool = False) -> Tensor:
    """Write (or add) the transpose of each plane of ``src`` into ``dst``.

    Args:
        src (Tensor): ``(P, Q, cols*rows)``, planes of ``(cols, rows)`` along the last
            dimension (unit stride; the first two may have any strides, so a view of a map
            with padded rows works).
        dst (Tensor): ``(P, Q, rows*cols)`` likewise, planes of ``(rows, cols)``.
        rows (int): Rows of a ``dst`` plane.
        cols (int): Columns of a ``dst`` plane.
        accumulate (bool): Add into ``dst`` (in fp32) instead of overwriting it.

    Returns:
        Tensor: ``dst``.
    """
    if (src.dim() != 3 or src.shape != dst.shape or src.shape[2] != rows * cols
            or src.stride(2) != 1 or dst.stride(2) != 1):
        raise ValueError(f'transpose_into: src {tuple(src.shape)} and dst {tuple(dst.shape)} '
                         f'must have the same shape (P, Q, rows*cols = {rows * cols}) with unit '
                         f'stride in the last dimension')
    outer, inner, _ = src.shape
    return _copy_tiles(src, dst, (outer, inner, rows, cols),
                       Strides(src.stride(0), src.stride(1), 1, rows),
                       Strides(dst.stride(0), dst.stride(1), cols, 1), accumulate)


def dense_2d(x: Tensor) -> Tensor:
    """``x (B, C, H, W)`` itself if contiguous or channels-last, else a contiguous copy."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def flat(x: Tensor) -> Tensor:
    """The ``(B, C, H*W)`` view of a contiguous or channels-last ``(B, C, H, W)`` map."""
    return x.view(x.shape[0], x.shape[1], -1)
