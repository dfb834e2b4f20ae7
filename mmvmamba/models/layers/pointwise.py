"""Position-wise linear layer on ``(B, C, H, W)`` maps (a GEMM over the channels)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.model import trunc_normal_init
from torch import nn


def linear_2d(x: torch.Tensor, weight: torch.Tensor,
              bias: torch.Tensor | None = None) -> torch.Tensor:
    """``weight @ x + bias`` at every pixel of ``x (B, C_in, H, W)``.

    Runs as one GEMM (``F.linear``) on the ``(B, H, W, C_in)`` view, with the bias added in the
    GEMM's epilogue. The backbone keeps its maps channels-last, where that view is contiguous:
    no copy in or out, and the result is channels-last again. (As a 1x1 convolution cuDNN
    transposed each NCHW map to NHWC and back around every projection, and added the bias in a
    pass of its own: docs/benchmarks.md, session 8.) A contiguous ``x`` works too, at the cost
    of one copy.

    Args:
        x (Tensor): ``(B, C_in, H, W)``.
        weight (Tensor): ``(C_out, C_in)``.
        bias (Tensor, optional): ``(C_out,)``.

    Returns:
        Tensor: ``(B, C_out, H, W)``, channels-last.
    """
    return F.linear(x.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)


class Linear2d(nn.Module):
    """A linear map over the channels of a ``(B, C, H, W)`` map, applied at every pixel.

    The weight keeps the 2-D ``(out_channels, in_channels)`` shape of an ``nn.Linear`` (the
    reference's state-dict layout); see :func:`linear_2d` for how it runs. The paper counts it as
    a 1x1 convolution, and so does ``tools/analysis/get_flops.py``.

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
