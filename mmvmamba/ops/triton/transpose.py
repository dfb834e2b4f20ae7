"""Layout copies of maps through Triton: batched transposes and channel-last <-> channel-major.

The fused SS2D core scans its row-major directions over a channel-major ``(B, D, H*W)`` map and
its column-major ones over a transposed ``(B, D, W*H)`` copy, while the backbone keeps its maps
in channels-last memory (``(B, D, H, W)`` with strides of ``(B, H, W, D)``). Every one of those
copies is the same operation, a 2-D tile transpose between two strided layouts, done by one
kernel: tiles of ``TR x TC`` keep both the reads and the writes coalesced (``.contiguous()`` of a
permuted view strides one side, and PyTorch's generic copy kernel is several times slower).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import device_guard

__all__ = ['transpose_into', 'channel_major', 'channel_major_transposed', 'channels_last_into',
           'is_channels_last', 'dense_2d', 'flat']

_TILE = 32


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


def _copy_tiles(src: Tensor, dst: Tensor, sizes: tuple[int, int, int, int], src_strides: Strides,
                dst_strides: Strides, accumulate: bool = False) -> Tensor:
    """Launch :func:`_copy_tiles_kernel` over the view ``sizes = (outer, inner, rows, cols)``."""
    outer, inner, rows, cols = sizes
    if outer * inner * rows * cols == 0:
        return dst
    tile_r = min(_TILE, triton.next_power_of_2(rows))
    tile_c = min(_TILE, triton.next_power_of_2(cols))
    grid = (outer * inner, triton.cdiv(rows, tile_r), triton.cdiv(cols, tile_c))
    with device_guard(src), torch.autocast(src.device.type, enabled=False):
        _copy_tiles_kernel[grid](src, dst, inner, rows, cols, *src_strides, *dst_strides,
                                 TR=tile_r, TC=tile_c, ACCUMULATE=accumulate, num_warps=4)
    return dst


def transpose_into(src: Tensor, dst: Tensor, rows: int, cols: int,
                   accumulate: bool = False) -> Tensor:
    """Write (or add) the transpose of each ``(cols, rows)`` plane of ``src`` into ``dst``.

    Args:
        src (Tensor): contiguous, ``P * cols * rows`` elements: ``P`` planes of ``(cols, rows)``.
        dst (Tensor): contiguous, same number of elements: ``P`` planes of ``(rows, cols)``.
        rows (int): Rows of a ``dst`` plane.
        cols (int): Columns of a ``dst`` plane.
        accumulate (bool): Add into ``dst`` (in fp32) instead of overwriting it.

    Returns:
        Tensor: ``dst``.
    """
    if not (src.is_contiguous() and dst.is_contiguous()) or src.numel() != dst.numel():
        raise ValueError(f'transpose_into: src {tuple(src.shape)} and dst {tuple(dst.shape)} '
                         f'must be contiguous with the same number of elements')
    planes = src.numel() // max(1, rows * cols)
    plane = rows * cols
    return _copy_tiles(src, dst, (planes, 1, rows, cols), Strides(plane, 0, 1, rows),
                       Strides(plane, 0, cols, 1), accumulate)


def is_channels_last(x: Tensor) -> bool:
    """Whether ``x (B, C, H, W)`` is laid out channels-last and not also plainly contiguous."""
    return (not x.is_contiguous()) and x.is_contiguous(memory_format=torch.channels_last)


def dense_2d(x: Tensor) -> Tensor:
    """``x (B, C, H, W)`` itself if contiguous or channels-last, else a contiguous copy."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def flat(x: Tensor) -> Tensor:
    """The ``(B, C, H*W)`` view of a contiguous or channels-last ``(B, C, H, W)`` map."""
    return x.view(x.shape[0], x.shape[1], -1)


def channel_major(x: Tensor) -> Tensor:
    """``x (B, D, H, W)`` as a contiguous ``(B, D, H*W)`` map (row-major positions).

    A view when ``x`` is contiguous; a tiled copy when it is channels-last; ``.contiguous()``
    otherwise.
    """
    batch, channels, height, width = x.shape
    length = height * width
    if not is_channels_last(x):
        return x.contiguous().view(batch, channels, length)
    out = x.new_empty(batch, channels, length)
    # out[b, 0, d, l] = x[b, l, d] (channels-last memory).
    return _copy_tiles(x, out, (batch, 1, channels, length),
                       Strides(length * channels, 0, 1, channels),
                       Strides(channels * length, 0, length, 1))


def channel_major_transposed(x: Tensor) -> Tensor:
    """``x (B, D, H, W)`` as a contiguous ``(B, D, W*H)`` map (column-major positions)."""
    batch, channels, height, width = x.shape
    length = height * width
    out = x.new_empty(batch, channels, length)
    if not is_channels_last(x):
        return transpose_into(x.contiguous().view(batch, channels, length), out, width, height)
    # out[b, w, d, h] = x[b, h, w, d]: outer b, inner w, rows d, cols h.
    return _copy_tiles(x, out, (batch, width, channels, height),
                       Strides(length * channels, channels, 1, width * channels),
                       Strides(channels * length, height, length, 1))


def channels_last_into(src: Tensor, dst: Tensor) -> Tensor:
    """Copy a channel-major ``src (B, D, H*W)`` into ``dst (B, D, H, W)``, whatever the latter's
    layout (channels-last or contiguous), casting to ``dst.dtype``.

    Returns:
        Tensor: ``dst``.
    """
    batch, channels, height, width = dst.shape
    length = height * width
    if src.shape != (batch, channels, length) or not src.is_contiguous():
        raise ValueError(f'channels_last_into: src must be contiguous (B, D, H*W) = '
                         f'{(batch, channels, length)}, got {tuple(src.shape)}')
    if not is_channels_last(dst):
        dst.view(batch, channels, length).copy_(src)
        return dst
    # dst[b, l, d] = src[b, d, l]: rows l, cols d (channels-last memory).
    return _copy_tiles(src, dst, (batch, 1, length, channels),
                       Strides(channels * length, 0, 1, length),
                       Strides(length * channels, 0, channels, 1))
