"""A hook that writes every training iteration's losses, averaged over all ranks, to a file.

mmengine logs the losses of rank 0 only (``BaseModel.parse_losses`` does not reduce them), so a
distributed run's log is not comparable to a single-process run of the same total batch. This
hook all-reduces each logged value (mean over ranks) and appends one JSON line per iteration on
rank 0::

    {"iter": 1, "loss": 5.91, "loss_rpn_cls": 0.69, ...}

    custom_hooks = [dict(type='LossTraceHook', out_file='losses.jsonl', max_iters=5)]

``tools/analysis/check_ddp_loss.py`` uses it to compare a DDP run with one process.
"""
from __future__ import annotations

import json
import os.path as osp

import torch
from mmengine.dist import all_reduce_dict, is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class LossTraceHook(Hook):
    """Append the rank-averaged training losses of each iteration to a JSON-lines file.

    Args:
        out_file: Output path; relative paths are taken inside the run's work dir.
        max_iters: Stop recording after this many iterations (None: all of them).
    """

    priority = 'LOW'

    def __init__(self, out_file: str = 'loss_trace.jsonl', max_iters: int | None = None):
        self.out_file = out_file
        self.max_iters = max_iters
        self._path: str | None = None

    def before_train(self, runner) -> None:
        self._path = self.out_file if osp.isabs(self.out_file) else osp.join(
            runner.work_dir, self.out_file)
        if is_main_process():
            open(self._path, 'w').close()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not outputs or (self.max_iters is not None and runner.iter >= self.max_iters):
            return
        # float64 scalars; mmengine moves them to the backend's device for the reduction.
        values = {k: torch.as_tensor(v, dtype=torch.float64).detach().reshape(()).clone()
                  for k, v in outputs.items()}
        all_reduce_dict(values, op='mean')
        if is_main_process():
            record = {'iter': runner.iter + 1, **{k: float(v) for k, v in values.items()}}
            with open(self._path, 'a') as f:
                f.write(json.dumps(record) + '\n')
