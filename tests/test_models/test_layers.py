"""Building blocks: drop path as a per-sample scale, the GEMM projections, channels-last maps."""
from __future__ import annotations

import torch

from mmvmamba.models.layers import VSSBlock
from mmvmamba.models.layers.vss_block import drop_path_scales


def test_drop_path_scales():
    x = torch.zeros(20000, 3)
    assert drop_path_scales(x, 0.25, training=False) is None
    assert drop_path_scales(x, 0.0, training=True) is None
    scale = drop_path_scales(x, 0.25, training=True)
    assert scale.shape == (2, 20000, 1, 1, 1) and scale.dtype == torch.float32
    kept = scale[scale != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.75))
    for branch in scale:  # each branch drops a quarter of the samples, independently
        assert abs((branch == 0).float().mean().item() - 0.25) < 0.02
    both = ((scale[0] == 0) & (scale[1] == 0)).float().mean().item()
    assert abs(both - 0.25**2) < 0.01


def test_block_drop_path_drops_whole_branches():
    """With rate ~1 almost every sample's branches are dropped: the block is the identity."""
    block = VSSBlock(8, drop_path_rate=0.999999).train()
    x = torch.randn(4, 8, 5, 6)
    torch.testing.assert_close(block(x), x)
    block.eval()
    assert not torch.allclose(block(x), x)


def test_add_branch_scales_each_sample():
    from mmvmamba.models.layers.vss_block import add_branch

    x, branch = torch.randn(3, 4, 5, 6), torch.randn(3, 4, 5, 6)
    scale = torch.tensor([0.0, 2.0, 1.0]).view(3, 1, 1, 1)
    expected = x + branch * scale
    torch.testing.assert_close(add_branch(x, branch, scale), expected)
    torch.testing.assert_close(add_branch(x, branch, None), x + branch)
    # A scale in another dtype does not promote the stream (a bf16 map stays bf16).
    half = add_branch(x.bfloat16(), branch.bfloat16(), scale)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), expected, rtol=2e-2, atol=5e-2)


def test_drop_path_scales_take_the_stream_dtype():
    scale = drop_path_scales(torch.zeros(64, 3, dtype=torch.bfloat16), 0.5, training=True)
    assert scale.dtype == torch.bfloat16 and set(scale.unique().tolist()) <= {0.0, 2.0}


def test_linear_2d_is_a_1x1_conv_in_either_layout():
    """The GEMM form equals a 1x1 convolution; its output is channels-last."""
    from mmvmamba.models.layers.pointwise import linear_2d

    weight, bias = torch.randn(7, 5), torch.randn(7)
    x = torch.randn(2, 5, 3, 4)
    expected = torch.nn.functional.conv2d(x, weight[:, :, None, None], bias)
    for x_in in (x, x.contiguous(memory_format=torch.channels_last)):
        out = linear_2d(x_in, weight, bias)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_backbone_runs_channels_last_and_returns_contiguous_features():
    from mmvmamba.models.backbones.vmamba import VMamba

    arch = dict(dims=8, depths=(1, 1), ssm_ratio=1.0, ssm_d_state=1, ssm_dt_rank='auto',
                ssm_conv=3, ssm_conv_bias=False, mlp_ratio=2.0)
    model = VMamba(arch, out_indices=(0, 1)).eval()
    seen = []
    model.layers[0].blocks[0].register_forward_hook(
        lambda m, args, out: seen.append(out.is_contiguous(memory_format=torch.channels_last)))
    outs = model(torch.randn(2, 3, 37, 50))
    assert seen == [True]
    assert [tuple(o.shape) for o in outs] == [(2, 8, 10, 13), (2, 16, 5, 7)]
    assert all(o.is_contiguous() for o in outs)
