"""``--resume`` loses nothing: a toy Mask R-CNN run stopped after a checkpoint and resumed ends
bit-identical to an uninterrupted run (model, optimizer, losses), validation in between
included. Without RNGStateHook it does not (DropPath, RoI sampling and flips draw random
numbers), which shows the hook is what makes it exact."""
from __future__ import annotations

import pytest
import torch
from tool_helpers import FAST_DET, TEST_HW, TOY_DET, load_ckpt, load_tool

from mmvmamba.datasets import make_toy_data

COMMON = ['train_dataloader.batch_size=2', 'default_hooks.checkpoint.interval=1',
          'default_hooks.checkpoint.max_keep_ckpts=5', 'train_cfg.val_interval=1',
          'randomness.seed=0', 'default_hooks.logger.interval=1', *FAST_DET]


@pytest.fixture(scope='module')
def train_main():
    return load_tool('train.py').main


def _train(train_main, work_dir, epochs, name, extra=(), resume=False):
    argv = [str(TOY_DET), '--work-dir', str(work_dir), '--cfg-options', *COMMON,
            f'train_cfg.max_epochs={epochs}', f'visualizer.name=vis_{name}', *extra]
    if resume:
        argv.append('--resume')
    train_main(argv)


def _losses(ckpt: dict) -> list[float]:
    return list(ckpt['message_hub']['log_scalars']['train/loss'].data[0])


@pytest.mark.parametrize('with_hook', [True, False], ids=['rng_hook', 'no_hook'])
def test_resume_matches_uninterrupted_run(tmp_path, monkeypatch, train_main, with_hook):
    h, w = TEST_HW
    make_toy_data(tmp_path / 'data/toy/coco', 'coco', num_train=4, num_val=1, height=h, width=w)
    monkeypatch.chdir(tmp_path)
    extra = [] if with_hook else ['custom_hooks=[]']
    tag = 'hook' if with_hook else 'nohook'
    # 2 iterations per epoch; the uninterrupted run validates between epochs 1 and 2, the
    # split run stops after epoch 1's checkpoint and resumes straight into epoch 2
    _train(train_main, tmp_path / 'full', 2, f'full_{tag}', extra)
    _train(train_main, tmp_path / 'split', 1, f'first_{tag}', extra)
    stopped = load_ckpt(tmp_path / 'split' / 'epoch_1.pth')
    assert ('rng_state' in stopped) == with_hook
    _train(train_main, tmp_path / 'split', 2, f'resumed_{tag}', extra, resume=True)

    full = load_ckpt(tmp_path / 'full' / 'epoch_2.pth')
    resumed = load_ckpt(tmp_path / 'split' / 'epoch_2.pth')
    assert resumed['meta']['epoch'] == full['meta']['epoch'] == 2
    assert resumed['meta']['iter'] == full['meta']['iter'] == 4
    full_losses, resumed_losses = _losses(full), _losses(resumed)
    assert len(full_losses) == len(resumed_losses) == 4
    # the first 2 iterations were run by the same code from the same seed in both
    assert resumed_losses[:2] == full_losses[:2]
    same_params = all(torch.equal(full['state_dict'][k], v)
                      for k, v in resumed['state_dict'].items())
    if with_hook:
        assert resumed_losses[2:] == full_losses[2:]
        assert same_params
        for a, b in zip(full['optimizer']['state'].values(),
                        resumed['optimizer']['state'].values()):
            assert all(torch.equal(a[k], b[k]) for k in a)
        assert full['param_schedulers'] == resumed['param_schedulers']
    else:
        assert resumed_losses[2:] != full_losses[2:]
        assert not same_params
