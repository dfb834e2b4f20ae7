"""Building blocks of VMamba, all channel-first ``(B, C, H, W)``."""
from .norm import LayerNorm2d
from .pointwise import Linear2d
from .ss2d import SS2D
from .vss_block import MLP, VSSBlock

__all__ = ['LayerNorm2d', 'Linear2d', 'MLP', 'SS2D', 'VSSBlock']
