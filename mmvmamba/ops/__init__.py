"""mmvmamba's op API: the only entry point layer code uses.

Each public function resolves its backend (see :mod:`mmvmamba.ops.dispatch`) and calls it.
Backends: ``selective_scan`` in {'reference', 'compiled'} (env ``MMVMAMBA_SCAN_BACKEND``),
``ss2d_core`` in {'reference'} plus 'fused' when the Triton kernels register it (env
``MMVMAMBA_SS2D_BACKEND``), ``layer_norm_2d`` in {'reference'} plus 'triton' (env
``MMVMAMBA_NORM_BACKEND``); the Triton backends ('fused', 'triton') register themselves when
Triton is installed.
"""
import importlib.util
from typing import Optional

import torch
from torch import Tensor

from . import compiled, dispatch, reference

__all__ = ['selective_scan', 'cross_scan', 'cross_merge', 'layer_norm_2d', 'ss2d_core',
           'dispatch']

dispatch.register('selective_scan', 'reference', reference.selective_scan, priority=0)
dispatch.register('selective_scan', 'compiled', compiled.selective_scan,
                  check=compiled.availability, priority=10)
dispatch.register('cross_scan', 'reference', reference.cross_scan, priority=0)
dispatch.register('cross_merge', 'reference', reference.cross_merge, priority=0)
dispatch.register('layer_norm_2d', 'reference', reference.layer_norm_2d, priority=0)
dispatch.register('ss2d_core', 'reference', reference.ss2d_core, priority=0)

if (importlib.util.find_spec('triton') is not None
        and importlib.util.find_spec('mmvmamba.ops.triton') is not None):
    from . import triton as _triton  # noqa: F401  (registers its backends on import)


def selective_scan(u: Tensor,
                   delta: Tensor,
                   A: Tensor,
                   B: Tensor,
                   C: Tensor,
                   D: Optional[Tensor] = None,
                   delta_bias: Optional[Tensor] = None,
                   delta_softplus: bool = True,
                   backend: Optional[str] = None) -> Tensor:
    """Selective scan (spec, SS2D step 7); fp32 state and output.

    Channel ``c`` uses group ``c // Cg`` of ``B`` and ``C``. See
    :func:`mmvmamba.ops.reference.selective_scan` for the exact recurrence.

    Args:
        u (Tensor): ``(B, K*Cg, L)``, fp32/fp16/bf16.
        delta (Tensor): ``(B, K*Cg, L)``, same dtype family as ``u``.
        A (Tensor): ``(K*Cg, N)`` fp32.
        B (Tensor): ``(B, K, N, L)``.
        C (Tensor): ``(B, K, N, L)``.
        D (Tensor, optional): ``(K*Cg,)`` fp32.
        delta_bias (Tensor, optional): ``(K*Cg,)`` fp32.
        delta_softplus (bool): Softplus on ``delta + delta_bias``. Default: True.
        backend (str, optional): 'auto', 'reference', 'compiled', or None to read
            ``MMVMAMBA_SCAN_BACKEND`` (default 'auto').

    Returns:
        Tensor: ``(B, K*Cg, L)`` fp32.

    Example:
        >>> import torch
        >>> from mmvmamba import ops
        >>> u = delta = torch.randn(2, 8, 10)
        >>> A = -torch.rand(8, 1)
        >>> B = C = torch.randn(2, 4, 1, 10)
        >>> ops.selective_scan(u, delta, A, B, C, backend='reference').shape
        torch.Size([2, 8, 10])
    """
    fn = dispatch.resolve('selective_scan', backend, u.device)
    return fn(u, delta, A, B, C, D, delta_bias, delta_softplus)


def cross_scan(x: Tensor) -> Tensor:
    """Four scan directions of a map (spec, SS2D step 3).

    Args:
        x (Tensor): ``(B, C, H, W)``.

    Returns:
        Tensor: ``(B, 4, C, H*W)``: row-major, column-major, and both reversed.
    """
    return dispatch.resolve('cross_scan', None, x.device)(x)


def cross_merge(y: Tensor, H: int, W: int) -> Tensor:
    """Sum four scan directions back onto the map (spec, SS2D step 8).

    Args:
        y (Tensor): ``(B, 4, C, H*W)``.
        H (int): Map height.
        W (int): Map width.

    Returns:
        Tensor: ``(B, C, H, W)``.
    """
    return dispatch.resolve('cross_merge', None, y.device)(y, H, W)


def _records_grad(*tensors: Optional[Tensor]) -> bool:
    """Whether autograd records an op on ``tensors`` (grad mode on, one of them needs grad)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def layer_norm_2d(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                  eps: float = 1e-5, backend: Optional[str] = None) -> Tensor:
    """Channel-first LayerNorm over ``C`` of a ``(B, C, H, W)`` map.

    Args:
        x (Tensor): ``(B, C, H, W)``.
        weight (Tensor, optional): ``(C,)``.
        bias (Tensor, optional): ``(C,)``.
        eps (float): Default: 1e-5.
        backend (str, optional): Backend name, or None to read ``MMVMAMBA_NORM_BACKEND``.

    Returns:
        Tensor: ``(B, C, H, W)``.

    Under ``torch.compile`` without autograd (inference), 'auto' means 'reference': on the
    backbone's channels-last maps the plain ``F.layer_norm`` reduces over the contiguous axis,
    and inductor generates it fused with the residual add before it and the cast after it (an
    opaque Triton op would cut the graph there and cost a custom-op call per norm). When
    autograd records the call (training), 'auto' keeps the Triton norm: inductor's generated
    norm forward+backward took 15.4 ms of compiled VMamba-T's 67.2 ms training step against
    5.6 ms for the Triton kernels (H100, batch 128, docs/benchmarks.md session 14).
    """
    if torch.compiler.is_compiling() and not _records_grad(x, weight, bias):
        backend = dispatch.auto_fallback(
            'layer_norm_2d', backend, 'reference',
            'under torch.compile without autograd inductor generates and fuses the '
            'plain-torch norm')
    return dispatch.resolve('layer_norm_2d', backend, x.device)(x, weight, bias, eps)


def ss2d_core(x: Tensor,
              x_proj_weight: Tensor,
              dt_projs_weight: Tensor,
              dt_projs_bias: Tensor,
              A_logs: Tensor,
              Ds: Tensor,
              out_norm_weight: Tensor,
              out_norm_bias: Tensor,
              eps: float = 1e-5,
              *,
              backend: Optional[str] = None,
              scan_backend: Optional[str] = None) -> Tensor:
    """SS2D core (spec steps 3-9): cross-scan, projections, scan, cross-merge, out-norm.

    Args:
        x (Tensor): ``(B, Din, H, W)`` after the depthwise conv and SiLU.
        x_proj_weight (Tensor): ``(K, R+2N, Din)``.
        dt_projs_weight (Tensor): ``(K, Din, R)``.
        dt_projs_bias (Tensor): ``(K, Din)``.
        A_logs (Tensor): ``(K*Din, N)``.
        Ds (Tensor): ``(K*Din,)``.
        out_norm_weight (Tensor): ``(Din,)``.
        out_norm_bias (Tensor): ``(Din,)``.
        eps (float): Out-norm epsilon. Default: 1e-5.
        backend (str, optional): 'auto', 'reference', 'fused' (when registered), or None to read
            ``MMVMAMBA_SS2D_BACKEND``. Under 'auto', d_state N > 1 always takes 'reference'
            (the fused core handles N = 1 only; logged once).
        scan_backend (str, optional): Scan backend used by the 'reference' composition.

    Returns:
        Tensor: ``(B, Din, H, W)`` in ``x.dtype``.
    """
    if A_logs.shape[-1] != 1:
        backend = dispatch.auto_fallback(
            'ss2d_core', backend, 'reference',
            f'the fused core supports d_state N = 1 only, this model has N = {A_logs.shape[-1]} '
            '(the reference composition runs its scan on the selective_scan backend)')
    fn = dispatch.resolve('ss2d_core', backend, x.device)
    return fn(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out_norm_weight,
              out_norm_bias, eps, scan_backend=scan_backend)
