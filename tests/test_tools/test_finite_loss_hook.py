"""FiniteLossHook in a real mmengine Runner: a run whose loss turns NaN stops at that iteration,
naming the term; a finite run is left alone."""
from __future__ import annotations

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

import mmvmamba  # noqa: F401  (registers the hook)


class _RegressionWithNaN(BaseModel):
    """A linear model whose ``loss_aux`` term becomes NaN from training iteration ``nan_at``."""

    def __init__(self, nan_at: int | None) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.nan_at = nan_at
        self.calls = 0

    def forward(self, x, y, mode='tensor'):
        pred = self.linear(torch.stack(x) if isinstance(x, list) else x)
        if mode != 'loss':
            return pred
        self.calls += 1
        aux = pred.mean() * 0
        if self.nan_at is not None and self.calls >= self.nan_at:
            aux = aux + float('nan')
        target = torch.stack(y) if isinstance(y, list) else y
        return dict(loss_main=((pred - target)**2).mean(), loss_aux=aux)


def _run(tmp_path, nan_at):
    data = [dict(x=torch.randn(2), y=torch.randn(1)) for _ in range(8)]
    runner = Runner(
        model=_RegressionWithNaN(nan_at),
        work_dir=str(tmp_path),
        train_dataloader=dict(dataset=data, sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=2, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=6),
        custom_hooks=[dict(type='FiniteLossHook')],
        default_hooks=dict(checkpoint=None),
        experiment_name=f'finite_{nan_at}')
    runner.train()
    return runner


def test_stops_at_the_first_non_finite_term(tmp_path):
    with pytest.raises(FloatingPointError, match=r"iteration 3: \{'loss': nan, 'loss_aux': nan\}"):
        _run(tmp_path, nan_at=3)


def test_finite_run_trains_to_the_end(tmp_path):
    assert _run(tmp_path, nan_at=None).iter == 6


def test_bad_interval():
    from mmvmamba.engine.hooks import FiniteLossHook
    with pytest.raises(ValueError, match='interval'):
        FiniteLossHook(interval=0)
