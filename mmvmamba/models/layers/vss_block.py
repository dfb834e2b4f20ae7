"""The VSS block: LayerNorm -> SS2D -> drop path, then LayerNorm -> MLP -> drop path."""
from __future__ import annotations

from typing import Union

import torch
import torch.utils.checkpoint as cp
from torch import nn

from .norm import LayerNorm2d
from .pointwise import Linear2d
from .ss2d import SS2D


def drop_path_scales(x: torch.Tensor, rate: float, training: bool,
                     branches: int = 2) -> torch.Tensor | None:
    """Per-sample scales of ``branches`` stochastic-depth branches, drawn at once:
    ``(branches, B, 1, 1, 1)`` of ``0`` or ``1 / (1 - rate)``, in ``x``'s dtype (the residual
    stream's, so that applying them needs no cast).

    Each sample's branch is kept with probability ``1 - rate`` and rescaled by ``1 / (1 - rate)``
    (as mmcv's ``DropPath``), independently per branch; None when nothing is dropped (eval, or
    rate 0). One draw for both branches of a block: the eager step is bound by host time, and
    every torch call counts.

    Args:
        x (Tensor): ``(B, ...)``, the block's input (for batch size and device).
        rate (float): Drop probability.
        training (bool): Whether the module is training.
        branches (int): Number of branches. Defaults to 2.

    Returns:
        Tensor | None: ``(branches, B, 1, 1, 1)`` in ``x.dtype``, or None.
    """
    if not training or rate == 0.0:
        return None
    keep = 1.0 - rate
    return torch.empty(branches, x.shape[0], 1, 1, 1, device=x.device,
                       dtype=x.dtype).bernoulli_(keep).div_(keep)


def add_branch(x: torch.Tensor, branch: torch.Tensor,
               scale: torch.Tensor | None) -> torch.Tensor:
    """``x + scale[b] * branch``: a residual branch, with its per-sample drop-path scale
    (``(B, 1, 1, 1)``, one row of :func:`drop_path_scales`, or None), added onto the stream;
    one pass. The scale is cast to ``x``'s dtype (a no-op for :func:`drop_path_scales`' own),
    so that it does not promote the result. (Under AMP the stream and the branch are both in
    the autocast dtype, the stem's convolution and the Triton LayerNorm keeping it so, and CUDA
    autocast's promotion of ``addcmul`` to the widest input has nothing to cast.)"""
    if scale is None:
        return x + branch
    return torch.addcmul(x, branch, scale.to(x.dtype))


class MLP(nn.Module):
    """Channel MLP on a ``(B, C, H, W)`` map: ``fc1`` (C -> hidden) -> GELU -> ``fc2``, added
    onto the residual stream.

    Args:
        embed_dims (int): Width C.
        hidden_dims (int): Hidden width (``int(mlp_ratio * C)``).
    """

    def __init__(self, embed_dims: int, hidden_dims: int) -> None:
        super().__init__()
        self.fc1 = Linear2d(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = Linear2d(hidden_dims, embed_dims)

    def forward(self, x: torch.Tensor, identity: torch.Tensor,
                scale: torch.Tensor | None = None) -> torch.Tensor:
        """``identity + scale * mlp(x)`` for ``x``, ``identity`` ``(B, C, H, W)`` and an
        optional per-sample ``scale (B, 1, 1, 1)``; returns ``(B, C, H, W)``."""
        return add_branch(identity, self.fc2(self.act(self.fc1(x))), scale)


class VSSBlock(nn.Module):
    """One VSS block of VMamba (channel-first, pre-norm, two residual branches).

    ``x = x + drop_path(op(norm(x)))``; ``x = x + drop_path(mlp(norm2(x)))``. Both branches use
    the same drop-path rate. Sub-module names (``norm``, ``op``, ``norm2``, ``mlp.fc1``,
    ``mlp.fc2``) are those of the reference state dict.

    Args:
        embed_dims (int): Width C.
        drop_path_rate (float): Stochastic-depth rate of both branches. Defaults to 0.
        ssm_ratio (float): SS2D inner width ratio. Defaults to 2.0.
        ssm_d_state (int): SS2D state size N. Defaults to 1.
        ssm_dt_rank (int | str): SS2D delta rank. Defaults to ``'auto'``.
        ssm_conv (int): SS2D depthwise kernel size. Defaults to 3.
        ssm_conv_bias (bool): SS2D depthwise conv bias. Defaults to False.
        mlp_ratio (float): MLP hidden width = int(mlp_ratio * C). Defaults to 4.0.
        with_cp (bool): Recompute the block in backward (gradient checkpointing) to save memory.
            Defaults to False.
        scan_backend (str, optional): Selective-scan backend passed down to SS2D.
        core_backend (str, optional): SS2D-core backend passed down to SS2D.
    """

    def __init__(self,
                 embed_dims: int,
                 drop_path_rate: float = 0.0,
                 ssm_ratio: float = 2.0,
                 ssm_d_state: int = 1,
                 ssm_dt_rank: Union[int, str] = 'auto',
                 ssm_conv: int = 3,
                 ssm_conv_bias: bool = False,
                 mlp_ratio: float = 4.0,
                 with_cp: bool = False,
                 scan_backend: str | None = None,
                 core_backend: str | None = None) -> None:
        super().__init__()
        hidden_dims = int(mlp_ratio * embed_dims)
        if hidden_dims < 1:
            raise ValueError(f'mlp_ratio must be > 0 (the published models use 4.0), '
                             f'got {mlp_ratio!r}')
        self.with_cp = with_cp
        self.norm = LayerNorm2d(embed_dims)
        self.op = SS2D(
            embed_dims, ssm_ratio=ssm_ratio, d_state=ssm_d_state, dt_rank=ssm_dt_rank,
            conv_kernel=ssm_conv, conv_bias=ssm_conv_bias, scan_backend=scan_backend,
            core_backend=core_backend)
        # A Python float rate: a tensor rate would make torch.compile recompile per block.
        self.drop_path_rate = float(drop_path_rate)
        self.norm2 = LayerNorm2d(embed_dims)
        self.mlp = MLP(embed_dims, hidden_dims)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        scales = drop_path_scales(x, self.drop_path_rate, self.training)
        op_scale, mlp_scale = (None, None) if scales is None else scales
        x = add_branch(x, self.op(self.norm(x)), op_scale)
        return self.mlp(self.norm2(x), x, mlp_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        if self.with_cp and torch.is_grad_enabled():
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)
