"""Losses of a detector config on the same images as one batch and split like G GPUs see them.

mmdet normalises some loss terms per batch (Mask R-CNN's mask loss is a mean over the positive
RoIs of the batch), so G GPUs x b images (DDP averages the per-GPU means) and one GPU x G*b
images are different objectives even with equal weights and data. This tool measures that gap
without any distribution: one model, one process, the first ``--images`` training images, first
as one batch and then as ``--splits`` equal batches whose per-term losses are averaged. Random
DropPath, flips and anchor/RoI subsampling are switched off (as in ``check_ddp_loss.py``).

    python tools/analysis/loss_split_check.py configs/toy/maskrcnn_vmamba_toy.py --device cuda

Writes JSON (``--out``) and logs a table of every term.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.logging import MMLogger, print_log
from mmengine.registry import DefaultScope
from mmengine.runner import set_random_seed

import mmvmamba  # noqa: F401  (registers the backbone)
from mmvmamba.datasets.toy import ensure_toy_data_from_cfg


def _deterministic_config(config: str, out: str) -> str:
    """``check_ddp_loss.deterministic_config`` (a sibling script, not a package module)."""
    path = osp.join(osp.dirname(osp.abspath(__file__)), 'check_ddp_loss.py')
    spec = importlib.util.spec_from_file_location('check_ddp_loss', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.deterministic_config(config, 1, out, keep_all_samples=True)


@torch.no_grad()
def batch_losses(model, samples: list) -> dict[str, float]:
    """Parsed losses (``loss`` = their sum, plus every term) of one batch."""
    data = model.data_preprocessor(pseudo_collate(samples), True)
    _, log_vars = model.parse_losses(model.loss(data['inputs'], data['data_samples']))
    return {k: float(v) for k, v in log_vars.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--images', type=int, default=8)
    parser.add_argument('--splits', type=int, default=2, help='G: batches the images are split in')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', default='work_dirs/loss_split_check.json')
    args = parser.parse_args(argv)
    if args.images % args.splits:
        raise SystemExit(f'--images {args.images} must be a multiple of --splits {args.splits}')

    cfg = Config.fromfile(_deterministic_config(args.config, args.out + '.config.py'))
    ensure_toy_data_from_cfg(cfg)
    scope = cfg.get('default_scope', 'mmdet')
    with DefaultScope.overwrite_default_scope(scope):
        from mmengine.registry import DATASETS, MODELS
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
        samples = [dataset[i] for i in range(args.images)]
        set_random_seed(0)
        model = MODELS.build(cfg.model).to(args.device)
        model.init_weights()
        model.train()
        whole = batch_losses(model, samples)
        size = args.images // args.splits
        parts = [batch_losses(model, samples[i:i + size]) for i in range(0, args.images, size)]
    split = {k: sum(p[k] for p in parts) / len(parts) for k in whole}
    rows = {k: dict(one_batch=whole[k], mean_of_splits=split[k],
                    rel_diff=abs(split[k] - whole[k]) / max(abs(whole[k]), 1e-12))
            for k in whole}
    with open(args.out, 'w') as f:
        json.dump(dict(config=args.config, images=args.images, splits=args.splits,
                       device=args.device, terms=rows), f, indent=1)
    lines = [f'{args.images} images as 1 batch vs mean of {args.splits} batches of {size} '
             f'({args.device}):', '| term | 1 batch | mean of splits | rel. diff |',
             '|---|---|---|---|']
    lines += [f'| {k} | {r["one_batch"]:.4f} | {r["mean_of_splits"]:.4f} | '
              f'{100 * r["rel_diff"]:.2f}% |' for k, r in rows.items()]
    print_log('\n'.join(lines), logger=MMLogger.get_instance('loss_split_check'))


if __name__ == '__main__':
    main()
