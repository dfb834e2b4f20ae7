"""Batched 2-D transpose of maps through Triton, optionally added into the destination.

The fused SS2D core scans its column-major directions over a transposed copy of the map, so it
needs ``(P, H, W) -> (P, W, H)`` copies of the activation and the output gradient, and adds the
column-major results back with a transposed add. Tiles of ``TR x TC`` keep both the reads and the
writes coalesced (``Tensor.contiguous()`` of a transposed view would stride one side).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import device_guard

__all__ = ['transpose_into']

_TILE = 32


@triton.jit
def _transpose_kernel(src_ptr, dst_ptr, ROWS, COLS, TR: tl.constexpr, TC: tl.constexpr,
                      ACCUMULATE: tl.constexpr):
    """``dst[p, r, c] (+)= src[p, c, r]``; grid ``(P, cdiv(ROWS, TR), cdiv(COLS, TC))``."""
    plane = tl.program_id(0).to(tl.int64) * ROWS * COLS
    rows = tl.program_id(1) * TR + tl.arange(0, TR)
    cols = tl.program_id(2) * TC + tl.arange(0, TC)
    mask = (rows[:, None] < ROWS) & (cols[None, :] < COLS)
    dst_offs = plane + rows[:, None] * COLS + cols[None, :]
    value = tl.load(src_ptr + plane + cols[None, :] * ROWS + rows[:, None], mask=mask, other=0.0)
    if ACCUMULATE:
        value = value.to(tl.float32) + tl.load(dst_ptr + dst_offs, mask=mask, other=0.0)
    tl.store(dst_ptr + dst_offs, value.to(dst_ptr.dtype.element_ty), mask=mask)


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
    if planes == 0:
        return dst
    tile_r = min(_TILE, triton.next_power_of_2(rows))
    tile_c = min(_TILE, triton.next_power_of_2(cols))
    grid = (planes, triton.cdiv(rows, tile_r), triton.cdiv(cols, tile_c))
    with device_guard(src), torch.autocast(src.device.type, enabled=False):
        _transpose_kernel[grid](src, dst, rows, cols, TR=tile_r, TC=tile_c,
                                ACCUMULATE=accumulate, num_warps=4)
    return dst
