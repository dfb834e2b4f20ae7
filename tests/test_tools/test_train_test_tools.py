"""tools/train.py and tools/test.py on the toy configs (CPU), and the inferencers on their
checkpoints. The data are tiny (4 train / 2 val images) and the runs 1 epoch: these check that
the tools work end to end, not how well the toy models learn (README's main job does that)."""
from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from tool_helpers import (
    FAST_DET,
    FAST_SEG,
    REPO,
    TEST_HW,
    TOY_DET,
    TOY_SEG,
    free_port,
    last_metrics,
    load_tool,
    run,
    tool_env,
)

from mmvmamba.datasets import make_toy_data

FAST = ['train_dataloader.batch_size=2', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
        'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1']


@pytest.fixture(scope='module')
def workspace(tmp_path_factory) -> Path:
    """A folder with data/toy/{coco,ade} holding 4 train / 2 val images each (the tools run
    with it as the working directory, so the configs' relative data roots point there)."""
    root = tmp_path_factory.mktemp('toy_ws')
    h, w = TEST_HW
    make_toy_data(root / 'data/toy/coco', 'coco', num_train=4, num_val=2, height=h, width=w)
    make_toy_data(root / 'data/toy/ade', 'ade', num_train=4, num_val=2, height=h, width=w)
    return root


@pytest.fixture(scope='module')
def det_run(workspace) -> Path:
    work_dir = workspace / 'work_det'
    run([sys.executable, str(REPO / 'tools/train.py'), str(TOY_DET), '--work-dir', str(work_dir),
         '--cfg-options', *FAST, *FAST_DET], cwd=workspace)
    return work_dir


@pytest.fixture(scope='module')
def seg_run(workspace) -> Path:
    work_dir = workspace / 'work_seg'
    run([sys.executable, str(REPO / 'tools/train.py'), str(TOY_SEG), '--work-dir', str(work_dir),
         '--cfg-options', *FAST, *FAST_SEG], cwd=workspace)
    return work_dir


def test_train_then_test_detection(workspace, det_run):
    ckpt = det_run / 'epoch_1.pth'
    assert ckpt.is_file()
    train_metrics = last_metrics(det_run)
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= train_metrics.keys()
    out = workspace / 'det_preds.pkl'
    test_dir = workspace / 'test_det'
    run([sys.executable, str(REPO / 'tools/test.py'), str(TOY_DET), str(ckpt), '--work-dir',
         str(test_dir), '--out', str(out), '--cfg-options', *FAST_DET], cwd=workspace)
    metrics = last_metrics(test_dir)
    # same checkpoint, same data, same metric: the test tool reproduces the training-time eval
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert metrics[key] == train_metrics[key]
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 2 and 'pred_instances' in preds[0]


def test_train_then_test_segmentation_with_tta(workspace, seg_run):
    ckpt = seg_run / 'epoch_1.pth'
    assert ckpt.is_file()
    assert 'mIoU' in last_metrics(seg_run)
    test_dir = workspace / 'test_seg_tta'
    run([sys.executable, str(REPO / 'tools/test.py'), str(TOY_SEG), str(ckpt), '--tta',
         '--work-dir', str(test_dir), '--cfg-options', *FAST_SEG[:1]], cwd=workspace)
    log = next(test_dir.glob('*/*.log')).read_text()
    assert 'SegTTAModel' in log or 'tta' in log.lower()
    assert 'mIoU' in last_metrics(test_dir)


def test_dist_test_two_cpu_processes_reproduce_the_training_eval(workspace, seg_run):
    """tools/dist_test.sh: 2 gloo ranks each evaluate 1 of the 2 val images; the gathered
    IoUMetric equals the one-process evaluation at the end of training."""
    train_metrics = last_metrics(seg_run)
    test_dir = workspace / 'dist_test_seg'
    env = tool_env(threads=1)
    env['PORT'] = str(free_port())
    proc = run(['bash', str(REPO / 'tools/dist_test.sh'), str(TOY_SEG),
                str(seg_run / 'epoch_1.pth'), '2', '--work-dir', str(test_dir),
                '--cfg-options', *FAST_SEG], cwd=workspace, env=env)
    assert 'rank 0/2 uses gloo on CPU' in proc.stdout + proc.stderr
    metrics = last_metrics(test_dir)
    for key in ('mIoU', 'aAcc', 'mAcc'):
        assert metrics[key] == train_metrics[key], key


def test_det_inferencer_on_an_image_file(workspace, det_run):
    from mmdet.apis import DetInferencer
    image = next((workspace / 'data/toy/coco/val').glob('*.jpg'))
    # the config the run dumped (the toy config with the test's overrides)
    config = det_run / TOY_DET.name
    inferencer = DetInferencer(model=str(config), weights=str(det_run / 'epoch_1.pth'),
                               device='cpu', show_progress=False)
    result = inferencer(str(image), return_datasamples=True)
    sample = result['predictions'][0]
    assert sample.pred_instances.masks.shape[-2:] == TEST_HW
    assert inferencer.model.dataset_meta['classes'] == ('square', 'disk', 'triangle')


def test_seg_inferencer_on_an_image_file(workspace, seg_run):
    from mmseg.apis import MMSegInferencer
    image = next((workspace / 'data/toy/ade/images/validation').glob('*.jpg'))
    inferencer = MMSegInferencer(model=str(seg_run / TOY_SEG.name),
                                 weights=str(seg_run / 'epoch_1.pth'),
                                 device='cpu')
    result = inferencer(str(image), return_datasamples=True)
    labels = result.pred_sem_seg.data
    assert labels.shape[-2:] == TEST_HW
    assert set(np.unique(labels.numpy()).tolist()) <= set(range(5))


def test_tools_create_toy_data_on_first_use(tmp_path):
    """No data yet: the tool writes data/toy/coco itself (only the data step is run here)."""
    train = load_tool('train.py')
    from mmvmamba.datasets.toy import ensure_toy_data_from_cfg
    cfg = Config.fromfile(str(TOY_DET))
    cfg.toy_data.root = str(tmp_path / 'coco')
    cfg.toy_data.update(num_train=2, num_val=1)
    assert ensure_toy_data_from_cfg(cfg) == tmp_path / 'coco'
    assert (tmp_path / 'coco/annotations/instances_val.json').is_file()
    assert train.parse_args([str(TOY_DET), '--resume']).resume == 'auto'


def test_launch_helpers():
    from mmvmamba.engine import launch
    cfg = Config.fromfile(str(TOY_DET))
    launch.apply_common(cfg, str(TOY_DET), None, 'none')
    assert cfg.work_dir == './work_dirs/maskrcnn_vmamba_toy'
    launch.apply_amp(cfg, device='cuda')
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    with pytest.raises(ValueError, match='accelerator'):
        launch.apply_amp(Config.fromfile(str(TOY_DET)), device='cpu')
    with pytest.raises(FileNotFoundError, match='no such checkpoint'):
        launch.apply_resume(cfg, '/nonexistent/epoch_3.pth')
    launch.apply_resume(cfg, 'auto')
    assert cfg.resume is True and cfg.load_from is None
    with pytest.raises(ValueError, match='tta_model'):
        launch.apply_tta(cfg)  # the detection toy config defines no TTA
    seg = launch.apply_tta(Config.fromfile(str(TOY_SEG)))
    assert seg.model.type == 'SegTTAModel' and seg.model.module.type == 'EncoderDecoder'
    assert seg.test_dataloader.dataset.pipeline[1].type == 'TestTimeAug'


def test_missing_pretrained_checkpoint_is_a_loud_error(tmp_path):
    """A shipped config whose ImageNet checkpoint is absent stops at weight init."""
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(str(REPO / 'configs/upernet_vmamba_t_ade20k.py'))
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.arch = dict(dims=32, depths=(1, 1, 2, 1), ssm_ratio=2.0, ssm_d_state=1,
                                   ssm_dt_rank='auto', ssm_conv=3, ssm_conv_bias=False,
                                   mlp_ratio=4.0)
    cfg.model.backbone.init_cfg.checkpoint = str(tmp_path / 'missing.pth')
    model = MODELS.build(cfg.model)
    with pytest.raises((FileNotFoundError, OSError, RuntimeError), match='missing.pth'):
        model.init_weights()


@pytest.mark.gpu
def test_amp_training_on_gpu(workspace):
    import torch
    if not torch.cuda.is_available():
        pytest.skip('needs a CUDA device')
    work_dir = workspace / 'work_amp'
    run([sys.executable, str(REPO / 'tools/train.py'), str(TOY_DET), '--amp', '--work-dir',
         str(work_dir), '--cfg-options', *FAST, *FAST_DET, 'train_cfg.val_interval=100'],
        cwd=workspace)
    log = next(work_dir.glob('*/*.log')).read_text()
    assert 'AmpOptimWrapper' in log
    assert (work_dir / 'epoch_1.pth').is_file()


CLOSE_GROUP_SCRIPT = '''
import os, sys
import torch
import torch.distributed as dist
from mmvmamba.engine.launch import close_process_group

def threads():
    return len(os.listdir('/proc/self/task'))

os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=sys.argv[1])
torch.nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2))  # torch's own threads first
before = threads()
dist.init_process_group('gloo', rank=0, world_size=1)
holder = {'model': torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))}
holder['self'] = holder  # a reference cycle holding the group, as the Runner's
del holder
during = threads()
close_process_group()
print('THREADS', before, during, threads())
'''


@pytest.mark.skipif(not Path('/proc/self/task').is_dir(), reason='counts threads in /proc')
def test_close_process_group_joins_the_groups_threads(tmp_path):
    """The tools' last call frees a gloo group still held by a reference cycle (as the Runner's
    DDP wrapper holds it), so no group thread outlives the interpreter (a rank aborted at exit
    when one did)."""
    script = tmp_path / 'close_group.py'
    script.write_text(CLOSE_GROUP_SCRIPT)
    proc = run([sys.executable, str(script), str(free_port())], cwd=tmp_path,
               env=tool_env(threads=1))
    before, during, after = map(int, proc.stdout.split('THREADS')[1].split())
    assert during > before  # the group's threads ran
    assert after == before, (before, during, after)
