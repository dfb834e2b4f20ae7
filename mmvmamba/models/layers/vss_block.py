"""The VSS block: LayerNorm -> SS2D -> drop path, then LayerNorm -> MLP -> drop path."""
from __future__ import annotations

from typing import Union

import torch
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from torch import nn

from .norm import LayerNorm2d
from .pointwise import Linear2d
from .ss2d import SS2D


class MLP(nn.Module):
    """Channel MLP on a ``(B, C, H, W)`` map: 1x1 ``fc1`` (C -> hidden) -> GELU -> 1x1 ``fc2``.

    Args:
        embed_dims (int): Width C.
        hidden_dims (int): Hidden width (``int(mlp_ratio * C)``).
    """

    def __init__(self, embed_dims: int, hidden_dims: int) -> None:
        super().__init__()
        self.fc1 = Linear2d(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = Linear2d(hidden_dims, embed_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        return self.fc2(self.act(self.fc1(x)))


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
        rate = float(drop_path_rate)
        self.drop_path = DropPath(rate) if rate > 0 else nn.Identity()
        self.norm2 = LayerNorm2d(embed_dims)
        self.mlp = MLP(embed_dims, hidden_dims)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        if self.with_cp and torch.is_grad_enabled():
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)
