"""Per-channel bias folded into the pointwise op after a bias-free 1x1 projection, through Triton.

PyTorch adds a convolution's bias in a pass of its own, over a broadcast operand (not
vectorised). These two ops take the bias into the pass that follows the projection anyway:

- ``bias_gelu(h, bias)``: ``gelu(h + bias[c])`` (the MLP's fc1 -> GELU).
- ``residual_add(x, h, bias, scale)``: ``x + (h + bias[c]) * scale[b]`` (a branch added onto
  the residual stream: fc2's bias and the per-sample drop-path scale in the same pass).

Maps are ``(B, C, H, W)`` contiguous, viewed as ``B*C`` rows of ``L = H*W``. One program owns a
tile of ``BR`` rows x ``BL`` positions, so short rows (7x7 maps) still give tiles of ~2048
elements; the row's channel and image come from the row index. Arithmetic in fp32. Bias
gradients are summed per row in the kernel and over images and position tiles by torch.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .launch import device_guard

__all__ = ['bias_gelu', 'residual_add']

_TILE_ELEMENTS = 2048
_SQRT1_2 = tl.constexpr(0.7071067811865476)
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


@triton.jit
def _tile(ROWS, L, BR: tl.constexpr, BL: tl.constexpr):
    """This program's rows ``(BR,)``, their mask, the tile's mask and element offsets
    ``(BR, BL)``; grid ``(cdiv(L, BL), cdiv(ROWS, BR))``."""
    rows = tl.program_id(1) * BR + tl.arange(0, BR)
    cols = tl.program_id(0) * BL + tl.arange(0, BL)
    rows_ok = rows < ROWS
    mask = rows_ok[:, None] & (cols[None, :] < L)
    return rows, rows_ok, mask, rows[:, None].to(tl.int64) * L + cols[None, :]


@triton.jit
def _store_row_sums(row_sum_ptr, rows, rows_ok, ROWS, values):
    """``row_sum[tile, row] = sum of values over this tile's positions``."""
    tl.store(row_sum_ptr + tl.program_id(0).to(tl.int64) * ROWS + rows, tl.sum(values, axis=1),
             mask=rows_ok)


@triton.jit
def _bias_gelu_fwd_kernel(h_ptr, bias_ptr, out_ptr, ROWS, C, L,
                          BR: tl.constexpr, BL: tl.constexpr):
    """``out = gelu(h + bias[row % C])``; grid ``(cdiv(L, BL), cdiv(ROWS, BR))``."""
    rows, rows_ok, mask, offs = _tile(ROWS, L, BR, BL)
    bias = tl.load(bias_ptr + rows % C, mask=rows_ok, other=0.0)
    u = tl.load(h_ptr + offs, mask=mask, other=0.0).to(tl.float32) + bias[:, None]
    out = 0.5 * u * (1.0 + tl.erf(u * _SQRT1_2))
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bias_gelu_bwd_kernel(grad_ptr, h_ptr, bias_ptr, grad_h_ptr, row_sum_ptr, ROWS, C, L,
                          BR: tl.constexpr, BL: tl.constexpr):
    """``grad_h = grad * gelu'(h + bias)``; its per-row sums over this tile's positions go to
    ``row_sum[tile, row]`` (the bias gradient once summed over tiles and images)."""
    rows, rows_ok, mask, offs = _tile(ROWS, L, BR, BL)
    bias = tl.load(bias_ptr + rows % C, mask=rows_ok, other=0.0)
    u = tl.load(h_ptr + offs, mask=mask, other=0.0).to(tl.float32) + bias[:, None]
    grad = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    cdf = 0.5 * (1.0 + tl.erf(u * _SQRT1_2))
    pdf = tl.exp(-0.5 * u * u) * _INV_SQRT_2PI
    grad_h = tl.where(mask, grad * (cdf + u * pdf), 0.0)
    tl.store(grad_h_ptr + offs, grad_h.to(grad_h_ptr.dtype.element_ty), mask=mask)
    _store_row_sums(row_sum_ptr, rows, rows_ok, ROWS, grad_h)


@triton.jit
def _residual_add_fwd_kernel(x_ptr, h_ptr, bias_ptr, scale_ptr, out_ptr, ROWS, C, L,
                             BR: tl.constexpr, BL: tl.constexpr, HAS_BIAS: tl.constexpr,
                             HAS_SCALE: tl.constexpr):
    """``out = x + (h + bias[row % C]) * scale[row // C]``."""
    rows, rows_ok, mask, offs = _tile(ROWS, L, BR, BL)
    branch = tl.load(h_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        branch += tl.load(bias_ptr + rows % C, mask=rows_ok, other=0.0)[:, None]
    if HAS_SCALE:
        branch *= tl.load(scale_ptr + rows // C, mask=rows_ok, other=0.0)[:, None]
    out = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) + branch
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _residual_add_bwd_kernel(grad_ptr, scale_ptr, grad_h_ptr, row_sum_ptr, ROWS, C, L,
                             BR: tl.constexpr, BL: tl.constexpr, HAS_SCALE: tl.constexpr):
    """``grad_h = grad * scale[row // C]`` (written only with a scale) and its per-row sums
    over this tile's positions in ``row_sum[tile, row]``."""
    rows, rows_ok, mask, offs = _tile(ROWS, L, BR, BL)
    grad_h = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_SCALE:
        grad_h *= tl.load(scale_ptr + rows // C, mask=rows_ok, other=0.0)[:, None]
        tl.store(grad_h_ptr + offs, grad_h.to(grad_h_ptr.dtype.element_ty), mask=mask)
    _store_row_sums(row_sum_ptr, rows, rows_ok, ROWS, grad_h)


def _geometry(rows: int, length: int) -> tuple[int, int, tuple[int, int]]:
    """Tile ``(BR, BL)`` and grid for ``rows x length``."""
    block_l = min(triton.next_power_of_2(length), 256)
    block_r = max(1, min(_TILE_ELEMENTS // block_l, triton.next_power_of_2(rows)))
    return block_r, block_l, (triton.cdiv(length, block_l), triton.cdiv(rows, block_r))


def _rows(t: Tensor) -> tuple[int, int, int]:
    """``(B*C, C, H*W)`` of a ``(B, C, H, W)`` map."""
    batch, channels, height, width = t.shape
    return batch * channels, channels, height * width


def _bias_grad(row_sum: Tensor, channels: int) -> Tensor:
    """``(tiles, B*C)`` per-tile row sums -> ``(C,)`` fp32 sums over tiles and images."""
    return row_sum.sum(0).view(-1, channels).sum(0)


def _launch_bias_gelu_fwd(h: Tensor, bias: Tensor) -> Tensor:
    rows, channels, length = _rows(h)
    out = torch.empty_like(h)
    block_r, block_l, grid = _geometry(rows, length)
    with device_guard(h):
        _bias_gelu_fwd_kernel[grid](h, bias.float().contiguous(), out, rows, channels, length,
                                    BR=block_r, BL=block_l, num_warps=4)
    return out


def _launch_bias_gelu_bwd(grad: Tensor, h: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    rows, channels, length = _rows(h)
    grad_h = torch.empty_like(h)
    block_r, block_l, grid = _geometry(rows, length)
    row_sum = torch.empty(grid[0], rows, device=h.device, dtype=torch.float32)
    with device_guard(h):
        _bias_gelu_bwd_kernel[grid](grad.contiguous(), h, bias.float().contiguous(), grad_h,
                                    row_sum, rows, channels, length, BR=block_r, BL=block_l,
                                    num_warps=4)
    return grad_h, _bias_grad(row_sum, channels)


def _launch_residual_add_fwd(x: Tensor, h: Tensor, bias: Tensor | None,
                             scale: Tensor | None) -> Tensor:
    rows, channels, length = _rows(h)
    out = torch.empty_like(x, dtype=torch.promote_types(x.dtype, h.dtype),
                           memory_format=torch.contiguous_format)
    block_r, block_l, grid = _geometry(rows, length)
    with device_guard(h):
        _residual_add_fwd_kernel[grid](
            x.contiguous(), h.contiguous(),
            bias.float().contiguous() if bias is not None else out,
            scale.float().contiguous() if scale is not None else out, out, rows, channels,
            length, BR=block_r, BL=block_l, HAS_BIAS=bias is not None,
            HAS_SCALE=scale is not None, num_warps=4)
    return out


def _launch_residual_add_bwd(grad: Tensor, scale: Tensor | None,
                             branch_dtype: torch.dtype) -> tuple[Tensor | None, Tensor]:
    """``grad * scale[b]`` in ``branch_dtype`` (None without a scale) and the bias gradient."""
    grad = grad.contiguous()
    rows, channels, length = _rows(grad)
    block_r, block_l, grid = _geometry(rows, length)
    row_sum = torch.empty(grid[0], rows, device=grad.device, dtype=torch.float32)
    grad_h = torch.empty_like(grad, dtype=branch_dtype) if scale is not None else None
    with device_guard(grad):
        _residual_add_bwd_kernel[grid](
            grad, scale.float().contiguous() if scale is not None else grad,
            grad_h if grad_h is not None else grad, row_sum, rows, channels, length,
            BR=block_r, BL=block_l, HAS_SCALE=scale is not None, num_warps=4)
    return grad_h, _bias_grad(row_sum, channels)


class _BiasGelu(torch.autograd.Function):
    """Autograd of :func:`bias_gelu` (a plain ``autograd.Function``: a ``torch.library`` custom
    op costs about twice the host time per call, and these run 14 times per VMamba-T step)."""

    @staticmethod
    def forward(ctx, h: Tensor, bias: Tensor) -> Tensor:
        h = h.contiguous()
        ctx.save_for_backward(h, bias)
        return _launch_bias_gelu_fwd(h, bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        h, bias = ctx.saved_tensors
        grad_h, grad_bias = _launch_bias_gelu_bwd(grad, h, bias)
        return grad_h, grad_bias.to(bias.dtype)


class _ResidualAdd(torch.autograd.Function):
    """Autograd of :func:`residual_add`."""

    @staticmethod
    def forward(ctx, x: Tensor, h: Tensor, bias: Tensor | None,
                scale: Tensor | None) -> Tensor:
        ctx.save_for_backward(scale)
        ctx.dtypes = (x.dtype, h.dtype, bias.dtype if bias is not None else None)
        return _launch_residual_add_fwd(x, h, bias, scale)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor | None, None]:
        (scale, ) = ctx.saved_tensors
        x_dtype, h_dtype, bias_dtype = ctx.dtypes
        grad_h, grad_bias = grad.to(h_dtype), None
        if scale is not None or bias_dtype is not None:
            scaled, grad_bias = _launch_residual_add_bwd(grad, scale, h_dtype)
            grad_h = scaled if scaled is not None else grad_h
            grad_bias = grad_bias.to(bias_dtype) if bias_dtype is not None else None
        return grad.to(x_dtype), grad_h, grad_bias, None


def bias_gelu(h: Tensor, bias: Tensor) -> Tensor:
    """``gelu(h + bias[c])`` (exact, erf form) of a ``(B, C, H, W)`` map, one pass (Triton).

    Args:
        h (Tensor): ``(B, C, H, W)``, any float dtype.
        bias (Tensor): ``(C,)``.

    Returns:
        Tensor: ``(B, C, H, W)`` contiguous, in ``h.dtype`` (computed in fp32).
    """
    if h.dim() != 4 or bias.shape != (h.shape[1], ):
        raise ValueError(f'bias_gelu: expected h (B, C, H, W) and bias (C,), got '
                         f'{tuple(h.shape)} and {tuple(bias.shape)}')
    return _BiasGelu.apply(h, bias)


def residual_add(x: Tensor, h: Tensor, bias: Tensor | None = None,
                 scale: Tensor | None = None) -> Tensor:
    """``x + (h + bias[c]) * scale[b]`` on ``(B, C, H, W)`` maps, one pass (Triton).

    Args:
        x (Tensor): ``(B, C, H, W)``, the residual stream.
        h (Tensor): ``(B, C, H, W)``, the branch.
        bias (Tensor, optional): ``(C,)`` added to the branch.
        scale (Tensor, optional): ``(B,)`` per-sample scale of the branch (drop path).

    Returns:
        Tensor: ``(B, C, H, W)`` contiguous, in the promoted dtype of ``x`` and ``h``.
    """
    if x.dim() != 4 or x.shape != h.shape:
        raise ValueError(f'residual_add: x and h must be (B, C, H, W) maps of one shape, got '
                         f'{tuple(x.shape)} and {tuple(h.shape)}')
    if bias is not None and bias.shape != (x.shape[1], ):
        raise ValueError(f'residual_add: bias must be ({x.shape[1]},), got {tuple(bias.shape)}')
    if scale is not None and scale.shape != (x.shape[0], ):
        raise ValueError(f'residual_add: scale must be ({x.shape[0]},), got {tuple(scale.shape)}')
    return _ResidualAdd.apply(x, h, bias, scale)
