"""SS2D: VMamba's 2-D selective-scan token mixer (spec, "SS2D", steps 1-10)."""
from __future__ import annotations

import math
from typing import Union

import torch
from torch import nn

from mmvmamba import ops

from .norm import LayerNorm2d
from .pointwise import Linear2d

#: Number of scan directions (row-major, column-major and both reversed).
NUM_DIRECTIONS = 4


def resolve_dt_rank(dt_rank: Union[int, str], embed_dims: int) -> int:
    """The rank R of the delta projection: ``ceil(C / 16)`` for ``'auto'`` (from C, not Din).

    Args:
        dt_rank (int | str): ``'auto'`` or a positive int.
        embed_dims (int): The block's width C.

    Returns:
        int: R.
    """
    if dt_rank == 'auto':
        return math.ceil(embed_dims / 16)
    if isinstance(dt_rank, bool) or not isinstance(dt_rank, int) or dt_rank < 1:
        raise ValueError(f"ssm_dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
    return dt_rank


class SS2D(nn.Module):
    """The SS2D layer of VMamba (the ``v05_noz`` forward: no z-gate, channel-first).

    ``in_proj`` (1x1) -> depthwise conv -> SiLU -> :func:`mmvmamba.ops.ss2d_core` (cross-scan,
    x/dt projections, selective scan, cross-merge, out_norm) -> ``out_proj`` (1x1).

    Parameter names and shapes are those of the reference (``x_proj_weight (4, R+2N, Din)``,
    ``A_logs (4*Din, N)``, ``Ds (4*Din)``, ``dt_projs_weight (4, Din, R)``,
    ``dt_projs_bias (4, Din)``, ``out_norm``, ``in_proj``, ``conv2d``, ``out_proj``), in the
    reference's state-dict order. ``A_logs`` and ``Ds`` should take no weight decay.

    Args:
        embed_dims (int): Width C of the input and output.
        ssm_ratio (float): Din = int(ssm_ratio * C). Defaults to 2.0.
        d_state (int): State size N. Defaults to 1.
        dt_rank (int | str): Rank R of the delta projection, ``'auto'`` = ceil(C / 16).
            Defaults to ``'auto'``.
        conv_kernel (int): Kernel size of the depthwise conv (odd, >= 3). Defaults to 3.
        conv_bias (bool): Whether the depthwise conv has a bias. Defaults to False.
        dt_min (float): Lower end of the log-uniform range of the initial dt. Defaults to 1e-3.
        dt_max (float): Upper end of the log-uniform range of the initial dt. Defaults to 0.1.
        dt_init_floor (float): Clamp of the initial dt from below. Defaults to 1e-4.
        scan_backend (str, optional): Passed to ``ops.ss2d_core(scan_backend=...)``.
        core_backend (str, optional): Passed to ``ops.ss2d_core(backend=...)``.
    """

    def __init__(self,
                 embed_dims: int,
                 ssm_ratio: float = 2.0,
                 d_state: int = 1,
                 dt_rank: Union[int, str] = 'auto',
                 conv_kernel: int = 3,
                 conv_bias: bool = False,
                 dt_min: float = 1e-3,
                 dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4,
                 scan_backend: str | None = None,
                 core_backend: str | None = None) -> None:
        super().__init__()
        d_inner = int(ssm_ratio * embed_dims)
        if d_inner < 1:
            raise ValueError(f'ssm_ratio={ssm_ratio} gives no inner channels at width {embed_dims}')
        if isinstance(d_state, bool) or not isinstance(d_state, int) or d_state < 1:
            raise ValueError(f'ssm_d_state must be a positive int, got {d_state!r}')
        if (isinstance(conv_kernel, bool) or not isinstance(conv_kernel, int) or conv_kernel < 3
                or conv_kernel % 2 == 0):
            raise ValueError(f'ssm_conv must be an odd int >= 3, got {conv_kernel!r}')
        self.embed_dims = embed_dims
        self.d_inner = d_inner
        self.d_state = d_state
        self.dt_rank = resolve_dt_rank(dt_rank, embed_dims)
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.scan_backend = scan_backend
        self.core_backend = core_backend

        k, r, n = NUM_DIRECTIONS, self.dt_rank, d_state
        # Own parameters first: the reference state dict lists them before the sub-modules.
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * n, d_inner))
        self.A_logs = nn.Parameter(torch.empty(k * d_inner, n))
        self.Ds = nn.Parameter(torch.empty(k * d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, r))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))
        self.out_norm = LayerNorm2d(d_inner)
        self.in_proj = Linear2d(embed_dims, d_inner, bias=False)
        self.conv2d = nn.Conv2d(
            d_inner, d_inner, conv_kernel, padding=conv_kernel // 2, groups=d_inner,
            bias=conv_bias)
        self.act = nn.SiLU()
        self.out_proj = Linear2d(d_inner, embed_dims, bias=False)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Initialise the SSM parameters as the spec says (sub-modules initialise themselves).

        x_proj: U(+-1/sqrt(Din)) (nn.Linear's default); dt_projs_weight: U(+-R^-0.5);
        dt_projs_bias: inverse softplus of dt ~ exp(U(log dt_min, log dt_max)) clamped at
        dt_init_floor; A_logs = log(1..N); Ds = 1.
        """
        bound = self.d_inner ** -0.5
        nn.init.uniform_(self.x_proj_weight, -bound, bound)
        bound = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_projs_weight, -bound, bound)
        log_dt = torch.empty_like(self.dt_projs_bias).uniform_(
            math.log(self.dt_min), math.log(self.dt_max))
        dt = log_dt.exp().clamp(min=self.dt_init_floor)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32)
        self.A_logs.copy_(a.log().expand_as(self.A_logs))
        self.Ds.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix tokens of ``x`` ``(B, C, H, W)``; returns ``(B, C, H, W)``."""
        x = self.act(self.conv2d(self.in_proj(x)))
        y = ops.ss2d_core(
            x, self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias, self.A_logs,
            self.Ds, self.out_norm.weight, self.out_norm.bias, self.out_norm.eps,
            backend=self.core_backend, scan_backend=self.scan_backend)
        return self.out_proj(y)

    def extra_repr(self) -> str:
        return (f'embed_dims={self.embed_dims}, d_inner={self.d_inner}, d_state={self.d_state}, '
                f'dt_rank={self.dt_rank}')
