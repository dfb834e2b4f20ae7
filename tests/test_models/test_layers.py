"""Building blocks: drop path as a per-sample scale folded into the residual add."""
from __future__ import annotations

import torch

from mmvmamba.models.layers import VSSBlock
from mmvmamba.models.layers.vss_block import drop_path_scale


def test_drop_path_scale():
    x = torch.zeros(20000, 3)
    assert drop_path_scale(x, 0.25, training=False) is None
    assert drop_path_scale(x, 0.0, training=True) is None
    scale = drop_path_scale(x, 0.25, training=True)
    assert scale.shape == (20000, ) and scale.dtype == torch.float32
    kept = scale[scale != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.75))
    assert abs((scale == 0).float().mean().item() - 0.25) < 0.02


def test_block_drop_path_drops_whole_branches():
    """With rate ~1 almost every sample's branches are dropped: the block is the identity."""
    block = VSSBlock(8, drop_path_rate=0.999999).train()
    x = torch.randn(4, 8, 5, 6)
    torch.testing.assert_close(block(x), x)
    block.eval()
    assert not torch.allclose(block(x), x)
