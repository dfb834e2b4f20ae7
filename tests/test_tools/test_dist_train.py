"""tools/dist_train.sh: 2 processes on CPU (gloo) train the toy Mask R-CNN; the ranks end with
equal parameters, equal (1e-6) to one process that sees the same 2 images per step.

Mask R-CNN normalises its losses per batch (sampled anchors/RoIs, positive RoIs for the mask
loss), so a batch of 2 in one process is a different objective from 2 ranks x 1 image, whose
gradients DDP averages. The single-process reference therefore takes the same 2 images per
optimizer step as 1 image x 2 accumulated iterations (``accumulative_counts=2``), which is what
DDP computes. The run is made deterministic so that both see the same numbers: no DropPath or
flips, and samplers that keep every anchor and RoI (no random subsampling). The optimizer is
SGD: its update is linear in the gradient, so a wrong reduction (a sum instead of a mean) shows,
and float rounding (all-reduce order vs accumulation) stays at rounding level. AdamW would hide
the first (it is scale-invariant) and amplify the second (elements whose gradient is ~1e-8
take steps of about lr whose sign depends on rounding).
"""
from __future__ import annotations

import sys
import textwrap

import torch
from tool_helpers import REPO, TEST_HW, TOY_DET, free_port, max_abs_diff, run, tool_env

from mmvmamba.datasets import make_toy_data

PROBE = '''
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module(force=True)
class DumpParamsProbe(Hook):
    """Saves this rank's parameters before and after training."""

    def _dump(self, runner, tag):
        model = getattr(runner.model, 'module', runner.model)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        torch.save(state, f'{runner.work_dir}/params_{tag}_rank{get_rank()}.pth')

    def before_train(self, runner):
        self._dump(runner, 'before')

    def after_train(self, runner):
        self._dump(runner, 'after')
'''

CONFIG = '''
_base_ = ['{base}']
custom_imports = dict(imports=['mmvmamba', 'ddp_probe'],
                      allow_failed_imports=False)
model = dict(
    backbone=dict(drop_path_rate=0.0),
    roi_head=dict(mask_head=dict(num_convs=1)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=1000000)),
        rpn_proposal=dict(max_per_img=64),
        rcnn=dict(sampler=dict(num=1000000))))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(80, 64), keep_ratio=True),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=1, dataset=dict(pipeline=train_pipeline))
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
param_scheduler = []
train_cfg = dict(max_epochs=1, val_interval=100)
default_hooks = dict(checkpoint=dict(interval=100))
custom_hooks = [dict(type='RNGStateHook'), dict(type='DumpParamsProbe')]
'''


def test_two_cpu_processes_match_one(tmp_path):
    h, w = TEST_HW
    make_toy_data(tmp_path / 'data/toy/coco', 'coco', num_train=4, num_val=1, height=h, width=w)
    (tmp_path / 'ddp_probe.py').write_text(PROBE)
    config = tmp_path / 'ddp_toy.py'
    config.write_text(textwrap.dedent(CONFIG.format(base=TOY_DET)))

    env = tool_env(threads=1, extra_path=tmp_path)
    env['PORT'] = str(free_port())
    ddp_dir = tmp_path / 'ddp'
    proc = run(['bash', str(REPO / 'tools/dist_train.sh'), str(config), '2', '--work-dir',
                str(ddp_dir)], cwd=tmp_path, env=env)
    output = proc.stdout + proc.stderr
    assert 'rank 0/2 uses gloo on CPU' in output  # rank 1 logs warnings only
    single_dir = tmp_path / 'single'
    run([sys.executable, str(REPO / 'tools/train.py'), str(config), '--work-dir',
         str(single_dir), '--cfg-options', 'optim_wrapper.accumulative_counts=2'],
        cwd=tmp_path, env=tool_env(threads=2, extra_path=tmp_path))

    before = torch.load(ddp_dir / 'params_before_rank0.pth')
    rank0 = torch.load(ddp_dir / 'params_after_rank0.pth')
    rank1 = torch.load(ddp_dir / 'params_after_rank1.pth')
    single = torch.load(single_dir / 'params_after_rank0.pth')
    assert max_abs_diff(before, torch.load(single_dir / 'params_before_rank0.pth')) == 0
    assert max_abs_diff(rank0, before) > 1e-3  # two SGD steps moved the weights
    assert max_abs_diff(rank0, rank1) == 0
    assert max_abs_diff(rank0, single) < 1e-6
