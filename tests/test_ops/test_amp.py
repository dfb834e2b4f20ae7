"""ops.amp.autocast_off: autocast switched off inside the block and restored after, as
``torch.autocast(enabled=False)`` would (CPU autocast; the flag is per device type)."""
import pytest
import torch

from mmvmamba.ops.amp import autocast_off


def test_autocast_off_disables_inside_and_restores_after():
    with torch.autocast('cpu', dtype=torch.bfloat16):
        a, b = torch.randn(4, 4), torch.randn(4, 4)
        assert torch.mm(a, b).dtype == torch.bfloat16
        with autocast_off('cpu'):
            assert not torch.is_autocast_enabled('cpu')
            assert torch.mm(a, b).dtype == torch.float32
        assert torch.is_autocast_enabled('cpu')
        assert torch.mm(a, b).dtype == torch.bfloat16


def test_autocast_off_restores_after_an_exception():
    with torch.autocast('cpu', dtype=torch.bfloat16):
        with pytest.raises(RuntimeError, match='inside'):
            with autocast_off('cpu'):
                raise RuntimeError('inside')
        assert torch.is_autocast_enabled('cpu')


def test_autocast_off_outside_autocast_leaves_it_off():
    with autocast_off('cpu'):
        assert not torch.is_autocast_enabled('cpu')
    assert not torch.is_autocast_enabled('cpu')


def test_add_branch_under_autocast_keeps_the_stream_dtype():
    from mmvmamba.models.layers.vss_block import add_branch

    x, branch = torch.randn(3, 4, 5, 6), torch.randn(3, 4, 5, 6).bfloat16()
    scale = torch.tensor([0.0, 2.0, 1.0]).view(3, 1, 1, 1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = add_branch(x, branch, scale)
        assert torch.is_autocast_enabled('cpu')
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x + branch.float() * scale, rtol=0, atol=0)
