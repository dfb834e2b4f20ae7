"""Channel-first LayerNorm through Triton, with autograd.

``layer_norm_2d(x, weight, bias, eps)`` normalises a ``(B, C, H, W)`` map over ``C`` in place of
the reference's permute + ``F.layer_norm`` + permute; the output keeps ``x``'s dtype and its
layout (contiguous or channels-last; any other layout is made contiguous first). The
launchers are shared with the fused SS2D core, whose output norm runs on its fp32 merged map.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .host import cpp_ops_for
from .launch import cdiv, launch, next_power_of_2
from .layer_norm_2d_kernels import layer_norm_2d_bwd_kernel, layer_norm_2d_fwd_kernel
from .transpose import dense_2d, flat

__all__ = ['layer_norm_2d', 'ln2d_forward', 'ln2d_backward']

#: Launch shape of the Python passes' kernels: ``tile_elements`` channels x positions held by
#: one program, but at least ``min_positions`` positions (at most the map's); ``fwd_warps`` and
#: ``bwd_warps`` per program. One backward program walks ``bwd_blocks`` such tiles of positions
#: (summing the weight/bias gradients per element, reduced over positions once) where the
#: padded channels are at most ``bwd_blocks_max_c`` and an image has at least
#: ``bwd_blocks_min_tiles`` tiles, else one tile. Maps whose positions are contiguous (the
#: core's merged fp32 map) with at least ``rows_min_c`` padded channels take at least
#: ``rows_min_positions`` positions per tile (a 32-byte sector of each fp32 channel row) and
#: ``rows_bwd_warps`` warps in the backward. (H100, VMamba-B shapes, backward ms: 256 x 56 x 56
#: 0.67 -> 0.43 walking 4 tiles, 1024 x 14 x 14 0.35 -> 0.20 as rows; docs/benchmarks.md.)
#: The defaults are the C++ passes' constants (``layer_norm_2d_blocks``; a test compares the
#: arithmetic); the other values are for ``benchmark.py --sections norm`` (the C++ passes do
#: not read this table).
NORM_TUNING = dict(tile_elements=4096, min_positions=1, fwd_warps=4, bwd_warps=4, bwd_blocks=4,
                   bwd_blocks_max_c=512, bwd_blocks_min_tiles=32, rows_min_c=1024,
                   rows_min_positions=8, rows_bwd_warps=8)


def _blocks(channels: int, length: int,
            positions_contiguous: bool) -> tuple[int, int, int, int]:
    """Channels and positions per program, the backward's tiles per program and its warps
    (see :data:`NORM_TUNING`), for a map whose position stride is 1 or not."""
    block_c = next_power_of_2(channels)
    rows = positions_contiguous and block_c >= NORM_TUNING['rows_min_c']
    min_positions = max(NORM_TUNING['min_positions'],
                        NORM_TUNING['rows_min_positions'] if rows else 1)
    block_p = min(next_power_of_2(length),
                  max(min_positions, NORM_TUNING['tile_elements'] // block_c))
    walks = (block_c <= NORM_TUNING['bwd_blocks_max_c']
             and cdiv(length, block_p) >= NORM_TUNING['bwd_blocks_min_tiles'])
    return (block_c, block_p, NORM_TUNING['bwd_blocks'] if walks else 1,
            NORM_TUNING['rows_bwd_warps'] if rows else NORM_TUNING['bwd_warps'])


def ln2d_forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
                 out: Tensor) -> tuple[Tensor, Tensor]:
    """Launch the forward kernel.

    Args:
        x (Tensor): ``(B, C, L)``, any float dtype, contiguous or channels-last (strides
            ``(L*C, 1, C)``).
        weight (Tensor, optional): ``(C,)``, any float dtype.
        bias (Tensor, optional): ``(C,)``, any float dtype.
        eps (float): Variance epsilon.
        out (Tensor): ``(B, C, L)`` to write, in either layout and any float dtype.

    Returns:
        tuple: ``out`` and ``stats (2, B, L)`` fp32, the mean and rstd per position (one
        tensor to save for the backward).
    """
    batch, channels, length = x.shape
    stats = torch.empty(2, batch, length, device=x.device, dtype=torch.float32)
    block_c, block_p, _, _ = _blocks(channels, length, x.stride(2) == 1)
    w = weight.contiguous() if weight is not None else x
    b = bias.contiguous() if bias is not None else x
    grid = (cdiv(length, block_p), batch)
    launch(layer_norm_2d_fwd_kernel, grid,
           (x, w, b, out, stats, channels, length, eps, *x.stride(), *out.stride()),
           dict(BC=block_c, BP=block_p, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
                num_warps=NORM_TUNING['fwd_warps']))
    return out, stats


def ln2d_backward(grad_out: Tensor, x: Tensor, weight: Tensor | None, stats: Tensor,
                  grad_dtype: torch.dtype,
                  out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Launch the backward kernel.

    Args:
        grad_out (Tensor): ``(B, C, L)``, contiguous or channels-last.
        x (Tensor): ``(B, C, L)`` the forward's input, contiguous or channels-last.
        weight (Tensor, optional): ``(C,)``, any float dtype.
        stats (Tensor): ``(2, B, L)`` fp32 from the forward (mean, rstd).
        grad_dtype (torch.dtype): Dtype of the input gradient.
        out (Tensor, optional): ``(B, C, L)`` in ``grad_dtype``, any strides (e.g. a view of a
            map with padded rows), to write the input gradient into.

    Returns:
        tuple: ``grad_x (B, C, L)`` (``out``, or with ``x``'s strides) and ``grad_affine
        (2, C)`` fp32, the weight's gradient and the bias's (one tensor: one reduction).
    """
    batch, channels, length = x.shape
    block_c, block_p, per_program, warps = _blocks(channels, length, x.stride(2) == 1)
    grid = (cdiv(cdiv(length, block_p), per_program), batch)
    if out is None:
        grad_x = torch.empty_like(x, dtype=grad_dtype)  # x is dense: its strides are kept
    elif out.shape != x.shape or out.dtype != grad_dtype:
        raise ValueError(f'ln2d_backward: out must have the shape of x {tuple(x.shape)} and '
                         f'dtype {grad_dtype}, got {tuple(out.shape)}, {out.dtype}')
    else:
        grad_x = out
    partial = torch.empty(batch * grid[0], 2, channels, device=x.device, dtype=torch.float32)
    w = weight.contiguous() if weight is not None else x
    launch(layer_norm_2d_bwd_kernel, grid,
           (grad_out, x, w, stats, grad_x, partial, channels, length, *grad_out.stride(),
            *x.stride(), *grad_x.stride()),
           dict(BC=block_c, BP=block_p, PB=per_program, HAS_WEIGHT=weight is not None,
                num_warps=warps))
    return grad_x, partial.sum(0)


class _LayerNorm2d(torch.autograd.Function):
    """Autograd of :func:`layer_norm_2d` in Python, for Triton's interpreter, ``torch.compile``
    and Triton launch hooks (eager CUDA calls run the same passes in C++, see :mod:`.host`). A
    plain ``autograd.Function`` rather than a ``torch.library`` custom op: it costs about half
    the host time per call, and ``torch.compile`` traces through it, kernels and all (compiled
    training takes this norm under 'auto'; compiled inference hands the norm to inductor)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None,
                eps: float) -> Tensor:
        x = dense_2d(x)
        out = torch.empty_like(x)
        _, stats = ln2d_forward(flat(x), weight, bias, eps, flat(out))
        ctx.save_for_backward(x, weight, stats)
        ctx.dtypes = (weight.dtype if weight is not None else None,
                      bias.dtype if bias is not None else None)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None, None]:
        x, weight, stats = ctx.saved_tensors
        grad_x, grad_affine = ln2d_backward(flat(dense_2d(grad_out)), flat(x), weight, stats,
                                            x.dtype)
        grad_w, grad_b = grad_affine.unbind(0)
        w_dtype, b_dtype = ctx.dtypes
        return (grad_x.view(x.shape), grad_w.to(w_dtype) if w_dtype is not None else None,
                grad_b.to(b_dtype) if b_dtype is not None else None, None)


def layer_norm_2d(x: Tensor, weight: Tensor | None, bias: Tensor | None,
                  eps: float = 1e-5) -> Tensor:
    """Channel-first LayerNorm over ``C`` of a ``(B, C, H, W)`` map (Triton).

    Statistics in fp32; the output has ``x``'s dtype (under autocast too, where the reference
    ``F.layer_norm`` would return fp32) and ``x``'s layout, contiguous or channels-last.

    Args:
        x (Tensor): ``(B, C, H, W)``.
        weight (Tensor, optional): ``(C,)``.
        bias (Tensor, optional): ``(C,)``.
        eps (float): Variance epsilon. Default: 1e-5.

    Returns:
        Tensor: ``(B, C, H, W)``.
    """
    if x.dim() != 4:
        raise ValueError(f'layer_norm_2d expects (B, C, H, W), got shape {tuple(x.shape)}')
    cpp = cpp_ops_for('layer_norm_2d', x)
    if cpp is not None:
        return cpp.layer_norm_2d(x, weight, bias, float(eps))
    return _LayerNorm2d.apply(x, weight, bias, float(eps))
