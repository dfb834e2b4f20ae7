"""Shared helpers of the tool tests: run the CLI tools, load them as modules, read results."""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
TOY_DET = REPO / 'configs' / 'toy' / 'maskrcnn_vmamba_toy.py'
TOY_SEG = REPO / 'configs' / 'toy' / 'upernet_vmamba_toy.py'

#: Test data size (the toy default is 128 x 160): the tools are tested, not the models.
TEST_HW = (64, 80)
#: --cfg-options that make the toy Mask R-CNN cheap for tests (fewer RoIs, 64 x 80 images).
FAST_DET = [
    'model.train_cfg.rpn_proposal.max_per_img=32', 'model.train_cfg.rcnn.sampler.num=32',
    'model.test_cfg.rpn.max_per_img=32', 'model.test_cfg.rcnn.max_per_img=5',
    'model.roi_head.mask_head.num_convs=1', 'train_dataloader.dataset.pipeline.2.scale=(80,64)',
    'val_dataloader.dataset.pipeline.1.scale=(80,64)',
    'test_dataloader.dataset.pipeline.1.scale=(80,64)']
#: The same for the toy UperNet (64 x 64 crops of 64 x 80 images).
FAST_SEG = [
    'model.data_preprocessor.size=(64,64)', 'train_dataloader.dataset.pipeline.2.scale=(80,64)',
    'train_dataloader.dataset.pipeline.3.crop_size=(64,64)',
    'val_dataloader.dataset.pipeline.1.scale=(80,64)',
    'test_dataloader.dataset.pipeline.1.scale=(80,64)']


def load_tool(relpath: str):
    """Import a script under tools/ as a module (they are not a package)."""
    path = REPO / 'tools' / relpath
    name = 'mmvmamba_tool_' + relpath.replace('/', '_').removesuffix('.py')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tool_env(threads: int = 2, extra_path: Path | None = None) -> dict:
    """Environment for a tool subprocess: the repo importable, a bounded thread count."""
    paths = [str(REPO)] + ([str(extra_path)] if extra_path else [])
    if os.environ.get('PYTHONPATH'):
        paths.append(os.environ['PYTHONPATH'])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), OMP_NUM_THREADS=str(threads),
                PYTHON=sys.executable)


def run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 600):
    """Run a command; fail the test with the tail of its output if it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=env or tool_env(), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f'{" ".join(map(str, cmd))} exited {proc.returncode}\n'
                             f'--- stdout ---\n{proc.stdout[-4000:]}\n'
                             f'--- stderr ---\n{proc.stderr[-6000:]}')
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def load_ckpt(path: Path) -> dict:
    """Load a Runner checkpoint the way mmengine does (torch's safe unpickler + mmvmamba's
    allowlist for Runner checkpoints)."""
    from mmengine.runner.checkpoint import _load_checkpoint

    import mmvmamba  # noqa: F401  (installs the Runner-checkpoint allowlist)
    return _load_checkpoint(str(path), map_location='cpu')


def last_metrics(work_dir: Path) -> dict:
    """Metrics of the last evaluation logged in ``work_dir`` (mmengine's ``<time>.json`` log,
    or the test-time ``<time>/<time>.json``)."""
    logs = sorted(work_dir.glob('*/vis_data/scalars.json')) + sorted(work_dir.glob('*/*.json'))
    found = {}
    for log in logs:
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            if any(k.endswith(('bbox_mAP', 'mIoU', 'accuracy/top1')) for k in entry):
                found = entry
    if not found:
        raise AssertionError(f'no evaluation metrics logged under {work_dir}')
    return found


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((x.double() - b[k].double()).abs().max().item() for k, x in a.items()
               if torch.is_floating_point(x))
