"""The toy UperNet learns: a short run through tools/train.py beats the untrained model's mIoU
on the toy validation images (the same seed, the same data, IoUMetric)."""
from __future__ import annotations

import copy

from mmengine.config import Config
from mmengine.runner import Runner
from tool_helpers import FAST_SEG, TEST_HW, TOY_SEG, last_metrics, load_tool

from mmvmamba.datasets import make_toy_data

SHORT = ['train_dataloader.batch_size=4', 'train_cfg.max_epochs=4', 'train_cfg.val_interval=4',
         'param_scheduler.0.end=4', 'default_hooks.checkpoint.interval=4', 'randomness.seed=0',
         *FAST_SEG]


def test_short_training_beats_the_untrained_model(tmp_path, monkeypatch):
    h, w = TEST_HW
    make_toy_data(tmp_path / 'data/toy/ade', 'ade', num_train=8, num_val=4, height=h, width=w)
    monkeypatch.chdir(tmp_path)

    train = load_tool('train.py')
    args = train.parse_args([str(TOY_SEG), '--cfg-options', *SHORT])
    cfg = Config.fromfile(str(TOY_SEG))
    cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = str(tmp_path / 'untrained')
    cfg.visualizer.name = 'vis_untrained'
    untrained = Runner.from_cfg(copy.deepcopy(cfg)).test()

    train.main([str(TOY_SEG), '--work-dir', str(tmp_path / 'trained'), '--cfg-options', *SHORT,
                'visualizer.name=vis_trained'])
    trained = last_metrics(tmp_path / 'trained')
    assert trained['mIoU'] > untrained['mIoU'] + 10, (untrained, trained)
    assert trained['aAcc'] > untrained['aAcc']
