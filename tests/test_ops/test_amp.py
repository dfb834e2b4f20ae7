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
