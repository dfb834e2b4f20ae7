"""RNGStateHook's state capture: complete, restorable, and loadable with weights_only=True."""
import io
import random

import numpy as np
import pytest
import torch

from mmvmamba.engine.hooks.rng_state_hook import RNGStateHook, set_rng_state


def _draw():
    return (random.random(), float(np.random.rand()), float(np.random.randn()),
            torch.rand(3).tolist())


def test_roundtrip_through_weights_only_checkpoint():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    checkpoint = {}
    RNGStateHook().before_save_checkpoint(None, checkpoint)
    expected = _draw()
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    random.seed(10)
    np.random.seed(20)
    torch.manual_seed(30)
    assert _draw() != expected
    set_rng_state(loaded['rng_state'])
    assert _draw() == expected


def _seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def test_validation_is_neutral():
    hook = RNGStateHook()
    _seed_all(0)
    hook.before_val_epoch(None)
    _draw()  # validation draws numbers
    hook.after_val_epoch(None, {})
    after_validation = _draw()
    _seed_all(0)
    assert _draw() == after_validation
    _seed_all(0)
    RNGStateHook(neutral_validation=False).before_val_epoch(None)
    _draw()
    assert _draw() != after_validation


@pytest.mark.gpu
def test_restores_a_state_loaded_onto_the_gpu():
    # mmengine's resume maps checkpoints onto the training device; the generators need CPU
    # byte tensors (this failed on the H100 with "can't convert cuda:0 device type tensor").
    _seed_all(5)
    torch.cuda.manual_seed_all(5)
    checkpoint = {}
    RNGStateHook().before_save_checkpoint(None, checkpoint)
    expected = (_draw(), torch.rand(3, device='cuda').tolist())
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True, map_location='cuda')
    assert loaded['rng_state']['torch'].is_cuda
    _seed_all(6)
    torch.cuda.manual_seed_all(6)
    set_rng_state(loaded['rng_state'])
    assert (_draw(), torch.rand(3, device='cuda').tolist()) == expected
