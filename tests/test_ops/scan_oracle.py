"""Test helpers for the selective scan: random inputs and a plain Python-loop oracle."""
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def make_scan_inputs(batch: int, groups: int, per_group: int, state: int, length: int,
                     dtype: torch.dtype = torch.float32, seed: int = 0,
                     device: str = 'cpu') -> Dict[str, Tensor]:
    """Random scan arguments in the contract's layouts, with VMamba-like value ranges.

    Returns a dict with ``u, delta`` ``(B, K*Cg, L)`` and ``B, C`` ``(B, K, N, L)`` in ``dtype``,
    and fp32 ``A`` ``(K*Cg, N)`` (negative), ``D``, ``delta_bias`` ``(K*Cg,)``.
    """
    gen = torch.Generator().manual_seed(seed)
    channels = groups * per_group

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    args = dict(
        u=randn(batch, channels, length),
        delta=randn(batch, channels, length) * 0.5,
        A=-torch.rand(channels, state, generator=gen) * 2 - 0.05,
        B=randn(batch, groups, state, length),
        C=randn(batch, groups, state, length),
        D=randn(channels),
        delta_bias=randn(channels) * 0.5 - 1.0,
    )
    for key in ('u', 'delta', 'B', 'C'):
        args[key] = args[key].to(dtype)
    return {k: v.to(device) for k, v in args.items()}


def loop_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
              D: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None,
              delta_softplus: bool = True) -> Tensor:
    """The scan as a literal loop over L, in float64 (slow; for small L only).

    Written independently of ``mmvmamba.ops.reference`` as a cross-check of its chunked form.
    Differentiable, so its gradients can serve as an oracle too.
    """
    batch, channels, length = u.shape
    groups = B.shape[1]
    per_group = channels // groups
    u64, dt = u.double(), delta.double()
    if delta_bias is not None:
        dt = dt + delta_bias.double()[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    A64 = A.double()
    B64 = B.double().repeat_interleave(per_group, dim=1)  # (B, K*Cg, N, L)
    C64 = C.double().repeat_interleave(per_group, dim=1)
    h = torch.zeros(batch, channels, A.shape[1], dtype=torch.float64, device=u.device)
    ys = []
    for step in range(length):
        dt_l = dt[:, :, step, None]
        h = torch.exp(dt_l * A64) * h + dt_l * B64[..., step] * u64[:, :, step, None]
        y = (h * C64[..., step]).sum(-1)
        if D is not None:
            y = y + D.double() * u64[:, :, step]
        ys.append(y)
    return torch.stack(ys, dim=-1)
