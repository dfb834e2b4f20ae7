"""Channel-first LayerNorm, the only normalisation VMamba uses."""
from __future__ import annotations

import torch
from torch import nn

from mmvmamba import ops


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a channel-first map, per pixel.

    Equivalent to ``nn.LayerNorm(num_channels)`` applied to the ``(B, H, W, C)`` view, without the
    two permutes. The state-dict keys are ``weight`` and ``bias``, as in the reference.

    Args:
        num_channels (int): Number of channels C.
        eps (float): Added to the variance for numerical stability. Defaults to 1e-5.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def reset_parameters(self) -> None:
        """Weight 1, bias 0 (the spec's LayerNorm initialisation)."""
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` of shape ``(B, C, H, W)`` over C; returns the same shape."""
        return ops.layer_norm_2d(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f'{self.num_channels}, eps={self.eps}'
