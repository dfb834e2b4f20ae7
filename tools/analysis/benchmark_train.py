"""Training speed of a config on synthetic data: seconds per iteration, images/s, peak memory.

The config's own model, optimizer wrapper and training pipeline run through mmengine's Runner;
only the data set is replaced, by synthetic images written once with ``mmvmamba.datasets.toy``
(``--data coco``: COCO instance layout, default 1333x800 so that the detection configs' resize
keeps it at 1333x800 and pads it to 1344x800; ``--data ade``: ADE20K layout, default 683x512,
which the segmentation configs resize and crop to 512x512). Validation and checkpoints are off.
After ``--warmup`` iterations the next ``--iters`` are timed between CUDA synchronisations::

    python tools/analysis/benchmark_train.py configs/maskrcnn_vmamba_t.py --data coco --amp \
        --out work_dirs/bench_train/t_1gpu.json
    python -m torch.distributed.run --nproc_per_node 2 tools/analysis/benchmark_train.py \
        configs/maskrcnn_vmamba_t.py --data coco --amp --launcher pytorch \
        --out work_dirs/bench_train/t_2gpu.json

images/s counts all ranks (batch per GPU x GPUs / seconds per iteration); peak memory is
``torch.cuda.max_memory_allocated``, the largest over the ranks. The JSON also holds the mean
data-loading wait per iteration, so a loader that cannot keep up shows.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import time

import torch
from mmengine.config import DictAction
from mmengine.dist import all_reduce, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from mmvmamba.datasets.toy import TOY_DET_CLASSES, ensure_toy_data
from mmvmamba.engine.launch import (
    apply_amp,
    build_runner,
    load_config,
    local_rank_to_env,
)

DEFAULT_SIZE = {'coco': (1333, 800), 'ade': (683, 512)}  # (W, H)


@HOOKS.register_module(force=True)
class TrainSpeedHook(Hook):
    """Time iterations ``warmup+1 .. warmup+iters`` and write the result as JSON on rank 0.

    Args:
        warmup: Untimed iterations first (cuDNN/Triton autotuning, allocator warm-up).
        iters: Timed iterations.
        batch_size: Images per rank and iteration.
        out_file: JSON output path.
        info: Extra fields copied into the JSON (config, data, dtype...).
    """

    priority = 'VERY_LOW'

    def __init__(self, warmup: int, iters: int, batch_size: int, out_file: str,
                 info: dict | None = None):
        self.warmup, self.iters, self.batch_size = warmup, iters, batch_size
        self.out_file, self.info = out_file, dict(info or {})
        self._start = None
        self._data_time = 0.0

    @staticmethod
    def _sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter == self.warmup:
            self._sync()
            self._start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self._start is not None:  # set at iteration ``warmup``
            self._data_time += runner.message_hub.get_scalar('train/data_time').current()
        if runner.iter + 1 != self.warmup + self.iters:
            return
        self._sync()
        seconds = (time.perf_counter() - self._start) / self.iters
        peak = torch.tensor(float(torch.cuda.max_memory_allocated()) if torch.cuda.is_available()
                            else 0.0)
        seconds_t = torch.tensor(seconds, dtype=torch.float64)
        all_reduce(peak, op='max')
        all_reduce(seconds_t, op='max')  # the slowest rank sets the pace
        world = get_world_size()
        result = dict(
            self.info,
            world_size=world,
            batch_per_gpu=self.batch_size,
            warmup=self.warmup,
            iters=self.iters,
            s_per_iter=float(seconds_t),
            img_per_s=world * self.batch_size / float(seconds_t),
            data_wait_s_per_iter=self._data_time / self.iters,
            peak_mib=float(peak) / 2**20,
            device=torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu',
            torch=torch.__version__)
        if is_main_process():
            os.makedirs(osp.dirname(osp.abspath(self.out_file)), exist_ok=True)
            with open(self.out_file, 'w') as f:
                json.dump(result, f, indent=1)
            print_log(f'train speed: {result["s_per_iter"]:.4f} s/iter, '
                      f'{result["img_per_s"]:.2f} img/s on {world} rank(s), peak '
                      f'{result["peak_mib"]:.0f} MiB, data wait '
                      f'{result["data_wait_s_per_iter"]:.4f} s/iter -> {self.out_file}',
                      logger='current')


def synthetic_dataset(cfg, kind: str, root: str) -> None:
    """Point ``cfg.train_dataloader.dataset`` at the synthetic set in ``root``, in place."""
    dataset = cfg.train_dataloader.dataset
    while 'dataset' in dataset:  # RepeatDataset / ClassBalancedDataset wrappers
        dataset = dataset.dataset
    dataset.data_root = root
    if kind == 'coco':
        dataset.ann_file = 'annotations/instances_train.json'
        dataset.data_prefix = dict(img='train/')
        # CocoDataset keeps only annotations whose category names are in its classes.
        dataset.metainfo = dict(classes=TOY_DET_CLASSES)
    else:
        # Toy labels 1..5 are valid ADE20K labels after reduce_zero_label: no metainfo needed.
        dataset.data_prefix = dict(img_path='images/training',
                                   seg_map_path='annotations/training')


def benchmark_config(cfg, kind: str, root: str, warmup: int, iters: int,
                     batch_size: int | None, workers: int | None, out_file: str, amp: bool):
    """Turn a training config into a fixed-length, validation-free speed run (in place)."""
    synthetic_dataset(cfg, kind, root)
    if batch_size is not None:
        cfg.train_dataloader.batch_size = batch_size
    if workers is not None:
        cfg.train_dataloader.num_workers = workers
        cfg.train_dataloader.persistent_workers = workers > 0
    # An infinite sampler: mmengine's iteration loop sleeps 2 s whenever a finite one restarts.
    cfg.train_dataloader.sampler = dict(type='InfiniteSampler', shuffle=True)
    total = warmup + iters
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=total, val_interval=total + 1)
    for split in ('val', 'test'):
        cfg[f'{split}_dataloader'] = cfg[f'{split}_cfg'] = cfg[f'{split}_evaluator'] = None
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=10)
    cfg.log_processor = dict(type='LogProcessor', window_size=10, by_epoch=False)
    cfg.resume, cfg.load_from = False, None
    info = dict(config=cfg.filename, data=kind, amp=amp)
    cfg.custom_hooks = list(cfg.get('custom_hooks', None) or []) + [
        dict(type='TrainSpeedHook', warmup=warmup, iters=iters,
             batch_size=cfg.train_dataloader.batch_size, out_file=out_file, info=info)]
    return cfg


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--data', choices=sorted(DEFAULT_SIZE), required=True,
                        help='synthetic data layout: coco (instances) or ade (segmentation)')
    parser.add_argument('--image-size', type=int, nargs=2, metavar=('W', 'H'),
                        help='synthetic image size (default: coco 1333 800, ade 683 512)')
    parser.add_argument('--num-images', type=int, default=32)
    parser.add_argument('--batch-size', type=int, help='images per GPU (default: the config\'s)')
    parser.add_argument('--workers', type=int, help='data workers per GPU (default: config)')
    parser.add_argument('--warmup', type=int, default=20)
    parser.add_argument('--iters', type=int, default=100)
    parser.add_argument('--amp', action='store_true', help='AmpOptimWrapper (fp16, dynamic)')
    parser.add_argument('--work-dir', default='work_dirs/benchmark_train')
    parser.add_argument('--data-root', help='where to write the synthetic images '
                        '(default: <work-dir>/synthetic_<data>_<W>x<H>)')
    parser.add_argument('--out', help='JSON result (default: <work-dir>/train_speed.json)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    local_rank_to_env(args.local_rank)
    width, height = args.image_size or DEFAULT_SIZE[args.data]
    root = args.data_root or osp.join(args.work_dir, f'synthetic_{args.data}_{width}x{height}')
    # Every rank asks; the writer is atomic, so the first one's files are used by all.
    ensure_toy_data(root, args.data, num_train=args.num_images, num_val=1, height=height,
                    width=width)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.amp:
        apply_amp(cfg)
    out = args.out or osp.join(args.work_dir, 'train_speed.json')
    benchmark_config(cfg, args.data, osp.abspath(root) + '/', args.warmup, args.iters,
                     args.batch_size, args.workers, out, args.amp)
    build_runner(cfg).train()


if __name__ == '__main__':
    main()
