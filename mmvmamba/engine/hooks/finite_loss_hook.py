"""A hook that stops training at the first non-finite loss, naming the term and the iteration.

Mixed-precision runs can overflow; mmengine would go on training on NaN weights and only the
final metrics would show it. With this hook the run fails at once::

    custom_hooks = [dict(type='FiniteLossHook')]

It checks every value the model's ``train_step`` returns (``loss`` and each logged term, e.g.
``loss_mask`` or ``decode.loss_ce``) after each iteration. mmdet's ``CheckInvalidLossHook`` checks
the total only and lives in mmdet's registry; this one also serves mmseg and mmpretrain configs
and names the offending term.
"""
from __future__ import annotations

import math

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Raise ``FloatingPointError`` when a logged training loss is NaN or infinite.

    Args:
        interval: Check every ``interval`` iterations (each check reads the values back from the
            device, a synchronisation). Defaults to 1.
    """

    priority = 'VERY_LOW'

    def __init__(self, interval: int = 1) -> None:
        if interval < 1:
            raise ValueError(f'interval must be >= 1, got {interval}')
        self.interval = interval

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not outputs or not self.every_n_train_iters(runner, self.interval):
            return
        bad = {k: float(v) for k, v in outputs.items() if not math.isfinite(float(v))}
        if bad:
            raise FloatingPointError(
                f'non-finite training loss at iteration {runner.iter + 1}: {bad} (all terms: '
                f'{ {k: round(float(v), 4) for k, v in outputs.items()} }). With fp16 AMP try '
                'bf16 (optim_wrapper.dtype=bfloat16), a lower learning rate or grad clipping.')
