"""The toy models learn: a short run through tools/train.py beats the untrained model on the
toy validation images (the same seed, the same data, the real IoUMetric / CocoMetric)."""
from __future__ import annotations

import copy

from mmengine.config import Config
from mmengine.runner import Runner
from tool_helpers import FAST_DET, FAST_SEG, TEST_HW, TOY_DET, TOY_SEG, last_metrics, load_tool

from mmvmamba.datasets import make_toy_data

SHORT_SEG = ['train_dataloader.batch_size=4', 'train_cfg.max_epochs=4',
             'train_cfg.val_interval=4', 'param_scheduler.0.end=4',
             'default_hooks.checkpoint.interval=4', 'randomness.seed=0', *FAST_SEG]
# 24 images x 6 epochs / batch 4 = 36 iterations; the LR steps of the 12-epoch recipe are
# moved past the end.
SHORT_DET = ['train_dataloader.batch_size=4', 'train_cfg.max_epochs=6',
             'train_cfg.val_interval=6', 'param_scheduler.0.end=10',
             'param_scheduler.1.end=6', 'param_scheduler.1.milestones=[6]',
             'default_hooks.checkpoint.interval=6', 'randomness.seed=0', *FAST_DET]


def _untrained_and_trained(tmp_path, config, options) -> tuple[dict, dict]:
    """Metrics of the config's model before training (same seed) and after tools/train.py."""
    train = load_tool('train.py')
    args = train.parse_args([str(config), '--cfg-options', *options])
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = str(tmp_path / 'untrained')
    cfg.visualizer.name = 'vis_untrained'
    untrained = Runner.from_cfg(copy.deepcopy(cfg)).test()

    train.main([str(config), '--work-dir', str(tmp_path / 'trained'), '--cfg-options', *options,
                'visualizer.name=vis_trained'])
    return untrained, last_metrics(tmp_path / 'trained')


def test_short_segmentation_training_beats_the_untrained_model(tmp_path, monkeypatch):
    h, w = TEST_HW
    make_toy_data(tmp_path / 'data/toy/ade', 'ade', num_train=8, num_val=4, height=h, width=w)
    monkeypatch.chdir(tmp_path)
    untrained, trained = _untrained_and_trained(tmp_path, TOY_SEG, SHORT_SEG)
    assert trained['mIoU'] > untrained['mIoU'] + 10, (untrained, trained)
    assert trained['aAcc'] > untrained['aAcc']


def test_short_detection_training_beats_the_untrained_model(tmp_path, monkeypatch):
    h, w = TEST_HW
    make_toy_data(tmp_path / 'data/toy/coco', 'coco', num_train=24, num_val=8, height=h, width=w)
    monkeypatch.chdir(tmp_path)
    untrained, trained = _untrained_and_trained(tmp_path, TOY_DET, SHORT_DET)
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert trained[key] > untrained[key] + 0.05, (key, untrained, trained)
