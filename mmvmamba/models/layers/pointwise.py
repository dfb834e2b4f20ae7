"""Position-wise linear layer on channel-first maps (a 1x1 convolution with a 2-D weight)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.model import trunc_normal_init
from torch import nn


def linear_2d(x: torch.Tensor, weight: torch.Tensor,
              bias: torch.Tensor | None = None) -> torch.Tensor:
    """``weight @ x`` at every pixel of ``x (B, C_in, H, W)``, as a 1x1 convolution.

    PyTorch adds a convolution's bias in a pass of its own; callers that can fold it into the
    pointwise op that follows (:func:`mmvmamba.ops.bias_gelu`, :func:`mmvmamba.ops.residual_add`)
    pass ``bias=None``. (A batched GEMM on the ``(B, C_in, H*W)`` view instead of cuDNN was no
    faster on an H100 at VMamba-T's shapes, and slower at 28x28 and below: docs/benchmarks.md.)

    Args:
        x (Tensor): ``(B, C_in, H, W)``.
        weight (Tensor): ``(C_out, C_in)``.
        bias (Tensor, optional): ``(C_out,)``.

    Returns:
        Tensor: ``(B, C_out, H, W)``.
    """
    return F.conv2d(x, weight[:, :, None, None], bias)


class Linear2d(nn.Module):
    """A linear map over the channels of a ``(B, C, H, W)`` map, applied at every pixel.

    The weight keeps the 2-D ``(out_channels, in_channels)`` shape of an ``nn.Linear`` (the
    reference's state-dict layout) and is applied as a 1x1 convolution, so FLOP counters bucket it
    as a convolution, as the paper counts it.

    Initialisation follows the spec for linear-type weights: truncated normal with std 0.02,
    bias 0.

    Args:
        in_channels (int): Input channels C_in.
        out_channels (int): Output channels C_out.
        bias (bool): Whether to add a learnable bias. Defaults to True.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated normal (std 0.02) weight, zero bias."""
        trunc_normal_init(self, std=0.02, bias=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C_in, H, W)`` to ``(B, C_out, H, W)``."""
        return linear_2d(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f'{self.in_channels}, {self.out_channels}, bias={self.bias is not None}'
