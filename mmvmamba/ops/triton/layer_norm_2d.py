"""Channel-first LayerNorm through Triton, as a torch custom op with autograd.

``layer_norm_2d(x, weight, bias, eps)`` normalises a ``(B, C, H, W)`` map over ``C`` in place of
the reference's permute + ``F.layer_norm`` + permute; the output keeps ``x``'s dtype and its
layout (contiguous or channels-last; any other layout is made contiguous first). The
launchers are shared with the fused SS2D core, whose output norm runs on its fp32 merged map.
"""
from __future__ import annotations

import torch
import triton
from torch import Tensor

from .launch import device_guard
from .layer_norm_2d_kernels import layer_norm_2d_bwd_kernel, layer_norm_2d_fwd_kernel

__all__ = ['layer_norm_2d', 'ln2d_forward', 'ln2d_backward']

_TILE_ELEMENTS = 4096  # channels x positions held by one program


def _blocks(channels: int, length: int) -> tuple[int, int]:
    block_c = triton.next_power_of_2(channels)
    block_p = max(1, min(triton.next_power_of_2(length), _TILE_ELEMENTS // block_c))
    return block_c, block_p


def ln2d_forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
                 out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Launch the forward kernel.

    Args:
        x (Tensor): ``(B, C, L)``, any float dtype, contiguous or channels-last (strides
            ``(L*C, 1, C)``).
        weight (Tensor, optional): ``(C,)``.
        bias (Tensor, optional): ``(C,)``.
        eps (float): Variance epsilon.
        out (Tensor): ``(B, C, L)`` to write, in either layout and any float dtype.

    Returns:
        tuple: ``out``, ``mean (B, L)`` and ``rstd (B, L)`` fp32.
    """
    batch, channels, length = x.shape
    mean = torch.empty(batch, length, device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    block_c, block_p = _blocks(channels, length)
    w = weight.float().contiguous() if weight is not None else x
    b = bias.float().contiguous() if bias is not None else x
    grid = (triton.cdiv(length, block_p), batch)
    with device_guard(x):
        layer_norm_2d_fwd_kernel[grid](
            x, w, b, out, mean, rstd, channels, length, eps, *x.stride(), *out.stride(),
            BC=block_c, BP=block_p, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
            num_warps=4)
    return out, mean, rstd


def ln2d_backward(grad_out: Tensor, x: Tensor, weight: Tensor | None, mean: Tensor,
                  rstd: Tensor, grad_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Launch the backward kernel.

    Args:
        grad_out (Tensor): ``(B, C, L)``, contiguous or channels-last.
        x (Tensor): ``(B, C, L)`` the forward's input, contiguous or channels-last.
        weight (Tensor, optional): ``(C,)``.
        mean (Tensor): ``(B, L)`` fp32 from the forward.
        rstd (Tensor): ``(B, L)`` fp32 from the forward.
        grad_dtype (torch.dtype): Dtype of the input gradient.

    Returns:
        tuple: ``grad_x (B, C, L)`` with ``x``'s strides, ``grad_weight (C,)`` and
        ``grad_bias (C,)`` fp32.
    """
    batch, channels, length = x.shape
    block_c, block_p = _blocks(channels, length)
    grid = (triton.cdiv(length, block_p), batch)
    grad_x = torch.empty_like(x, dtype=grad_dtype)  # x is dense: its strides are kept
    partial = torch.empty(batch * grid[0], 2, channels, device=x.device, dtype=torch.float32)
    w = weight.float().contiguous() if weight is not None else x
    with device_guard(x):
        layer_norm_2d_bwd_kernel[grid](
            grad_out, x, w, mean, rstd, grad_x, partial, channels, length, *grad_out.stride(),
            *x.stride(), BC=block_c, BP=block_p, HAS_WEIGHT=weight is not None, num_warps=4)
    return grad_x, partial[:, 0].sum(0), partial[:, 1].sum(0)


def dense_2d(x: Tensor) -> Tensor:
    """``x (B, C, H, W)`` itself if contiguous or channels-last, else a contiguous copy."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def flat(x: Tensor) -> Tensor:
    """The ``(B, C, H*W)`` view of a contiguous or channels-last ``(B, C, H, W)`` map."""
    return x.view(x.shape[0], x.shape[1], -1)


@torch.library.custom_op('mmvmamba_triton::layer_norm_2d_fwd', mutates_args=())
def _ln2d_fwd_op(x: Tensor, weight: Tensor | None, bias: Tensor | None,
                 eps: float) -> tuple[Tensor, Tensor, Tensor]:
    x = dense_2d(x)
    out = torch.empty_like(x)
    _, mean, rstd = ln2d_forward(flat(x), weight, bias, eps, flat(out))
    return out, mean, rstd


@_ln2d_fwd_op.register_fake
def _(x, weight, bias, eps):
    batch, _, height, width = x.shape
    stats = x.new_empty(batch, height * width, dtype=torch.float32)
    return torch.empty_like(dense_2d(x)), stats, stats.clone()


@torch.library.custom_op('mmvmamba_triton::layer_norm_2d_bwd', mutates_args=())
def _ln2d_bwd_op(grad_out: Tensor, x: Tensor, weight: Tensor | None, mean: Tensor,
                 rstd: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    x = dense_2d(x)
    grad_x, grad_w, grad_b = ln2d_backward(flat(dense_2d(grad_out)), flat(x), weight, mean,
                                           rstd, x.dtype)
    return grad_x.view(x.shape), grad_w, grad_b


@_ln2d_bwd_op.register_fake
def _(grad_out, x, weight, mean, rstd):
    channels = x.shape[1]
    grad_w = x.new_empty(channels, dtype=torch.float32)
    return torch.empty_like(dense_2d(x)), grad_w, grad_w.clone()


def _ln2d_setup(ctx, inputs, output):
    x, weight, bias, _ = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, mean, rstd)
    ctx.has_bias = bias is not None
    ctx.dtypes = (weight.dtype if weight is not None else None,
                  bias.dtype if bias is not None else None)


def _ln2d_backward(ctx, grad_out, _grad_mean, _grad_rstd):
    x, weight, mean, rstd = ctx.saved_tensors
    grad_x, grad_w, grad_b = _ln2d_bwd_op(grad_out, x, weight, mean, rstd)
    w_dtype, b_dtype = ctx.dtypes
    grad_w = grad_w.to(w_dtype) if weight is not None else None
    grad_b = grad_b.to(b_dtype) if ctx.has_bias else None
    return grad_x, grad_w, grad_b, None


_ln2d_fwd_op.register_autograd(_ln2d_backward, setup_context=_ln2d_setup)


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
    return _ln2d_fwd_op(x, weight, bias, float(eps))[0]
