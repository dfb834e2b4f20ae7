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


def _map_strides(out: Tensor, batch: int, channels: int, length: int) -> tuple[int, int]:
    """Batch and channel strides of ``out``, a ``(B, D, L)`` map with unit position stride."""
    if out.shape != (batch, channels, length) or out.stride(2) != 1:
        raise ValueError(f'out must be a (B, D, L) = {(batch, channels, length)} map with unit '
                         f'stride along L, got {tuple(out.shape)} with strides {out.stride()}')
    return out.stride(0), out.stride(1)


def channel_major(x: Tensor, out: Tensor | None = None) -> Tensor:
    """``x (B, D, H, W)`` as a ``(B, D, H*W)`` map (row-major positions).

    Without ``out``: a contiguous map, a view when ``x`` is contiguous, a tiled copy when it is
    channels-last, ``.contiguous()`` otherwise. ``out``: a ``(B, D, H*W)`` map with unit stride
    along positions (e.g. a view of a map with padded rows) to write into.
    """
    batch, channels, height, width = x.shape
    length = height * width
    if not is_channels_last(x):
        dense = x.contiguous().view(batch, channels, length)
        return dense if out is None else out.copy_(dense)
    if out is None:
        out = x.new_empty(batch, channels, length)
    out_batch, out_channel = _map_strides(out, batch, channels, length)
    # out[b, 0, d, l] = x[b, l, d] (channels-last memory).
    return _copy_tiles(x, out, (batch, 1, channels, length),
                       Strides(length * channels, 0, 1, channels),
                       Strides(out_batch, 0, out_channel, 1))


def channel_major_transposed(x: Tensor, out: Tensor | None = None) -> Tensor:
    """``x (B, D, H, W)`` as a ``(B, D, W*H)`` map (column-major positions), contiguous or
    written into ``out`` (as in :func:`channel_major`)."""
    batch, channels, height, width = x.shape
    length = height * width
    if out is None:
        out = x.new_empty(batch, channels, length)
    if not is_channels_last(x):
        return transpose_into(x.contiguous().view(batch, channels, length), out, width, height)
    out_batch, out_channel = _map_strides(out, batch, channels, length)
    # out[b, w, d, h] = x[b, h, w, d]: outer b, inner w, rows d, cols h.
    return _copy_tiles(x, out, (batch, width, channels, height),
                       Strides(length * channels, channels, 1, width * channels),
                       Strides(out_batch, height, out_channel, 1))


def channels_last_into(src: Tensor, dst: Tensor) -> Tensor:
    """Copy a channel-major ``src (B, D, H*W)`` (unit stride along positions) into
    ``dst (B, D, H, W)``, whatever the latter's layout (channels-last or contiguous), casting to
    ``dst.dtype``.

    Returns:
        Tensor: ``dst``.
    """
    batch, channels, height, width = dst.shape
    length = height * width
    src_batch, src_channel = _map_strides(src, batch, channels, length)
    if not is_channels_last(dst):
        dst.view(batch, channels, length).copy_(src)
        return dst
    # dst[b, l, d] = src[b, d, l]: rows l, cols d (channels-last memory).
    return _copy_tiles(src, dst, (batch, 1, length, channels),
                       Strides(src_batch, 0, 1, src_channel),
                       Strides(length * channels, 0, channels, 1))
