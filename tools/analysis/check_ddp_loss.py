"""Check a distributed run against one process: same losses, and its checkpoint tests.

Runs the training config twice for ``--iters`` iterations from the same seed: once with
``tools/dist_train.sh CONFIG N`` (N processes x ``--batch-per-gpu`` images) and once with
``tools/train.py`` in one process with the same total batch (N x ``--batch-per-gpu``).
``LossTraceHook`` records each iteration's losses averaged over the ranks; the check passes when
the total loss of every compared iteration agrees within ``--tolerance`` (relative). Then the
distributed run's checkpoint is evaluated by a single-process ``tools/test.py``.

The runs are made as deterministic as the model allows, so that what remains is the
distribution itself: no DropPath, no random flips, one epoch, no validation. Random anchor and
RoI sampling stay (they are part of the recipe; ``--keep-all-samples`` removes them), so the
losses agree closely, not bit for bit.

    python tools/analysis/check_ddp_loss.py configs/toy/maskrcnn_vmamba_toy.py --gpus 2 \
        --work-dir work_dirs/ddp_check

Writes ``<work-dir>/ddp_check.json`` and prints a table; exits 1 if the check fails.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import socket
import subprocess
import sys

from mmengine.config import Config
from mmengine.logging import MMLogger, print_log

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def deterministic_config(config: str, iters: int, out: str, keep_all_samples: bool) -> str:
    """Write ``config`` with DropPath and flips off, one epoch, a loss trace; returns its path.

    ``keep_all_samples`` also lifts the RPN's and R-CNN's sample counts so that every anchor and
    RoI is used (two-stage detectors only): no random subsampling is left.
    """
    cfg = Config.fromfile(config)
    train_cfg = cfg.model.get('train_cfg', None) or {}
    if keep_all_samples:
        stages = [s for s in ('rpn', 'rcnn') if 'sampler' in (train_cfg.get(s, None) or {})]
        if not stages:
            raise SystemExit('--keep-all-samples: the model has no rpn/rcnn sampler')
        for stage in stages:
            train_cfg[stage].sampler.num = 10**6
    backbone = cfg.model.get('backbone', None)
    if backbone is not None and 'drop_path_rate' in backbone:
        backbone.drop_path_rate = 0.0
    for step in cfg.train_dataloader.dataset.get('pipeline', []):
        if step.get('type') == 'RandomFlip':
            step.prob = 0.0
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=10**6)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, max_keep_ckpts=1)
    cfg.randomness = dict(seed=0)
    cfg.custom_hooks = list(cfg.get('custom_hooks', None) or []) + [
        dict(type='LossTraceHook', out_file='loss_trace.jsonl', max_iters=iters)]
    cfg.dump(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(cmd: list[str], log: str) -> None:
    """Run ``cmd`` with the repository importable; its output goes to ``log``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO] + ([os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH') else [])))
    env.setdefault('PORT', str(free_port()))
    env.setdefault('PYTHON', sys.executable)
    with open(log, 'w') as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd())
    if proc.returncode != 0:
        with open(log) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f'{" ".join(cmd)} exited {proc.returncode}; log {log}:\n{tail}')


def read_trace(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def last_metrics(work_dir: str) -> dict:
    """The metrics line of the newest ``<timestamp>/<timestamp>.json`` that test.py wrote."""
    runs = sorted(d for d in os.listdir(work_dir) if osp.isdir(osp.join(work_dir, d)))
    path = osp.join(work_dir, runs[-1], runs[-1] + '.json')
    with open(path) as f:
        return json.loads(f.readlines()[-1])


def compare(dist_trace: list[dict], single_trace: list[dict], iters: int,
            tolerance: float) -> tuple[list[dict], bool]:
    """Per-iteration rows ``{iter, key: (dist, single, rel)}`` and whether all totals agree."""
    if len(dist_trace) < iters or len(single_trace) < iters:
        raise SystemExit(f'only {len(dist_trace)} (DDP) / {len(single_trace)} (single) '
                         f'iterations were traced; an epoch must hold >= {iters} iterations')
    rows, ok = [], True
    for d, s in zip(dist_trace[:iters], single_trace[:iters]):
        row = {'iter': d['iter']}
        for key in d:
            if key.startswith('loss'):
                rel = abs(d[key] - s[key]) / max(abs(s[key]), 1e-12)
                row[key] = (d[key], s[key], rel)
        ok &= row['loss'][2] <= tolerance
        rows.append(row)
    return rows, ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--gpus', type=int, default=2, help='processes of the DDP run')
    parser.add_argument('--batch-per-gpu', type=int, default=4)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--tolerance', type=float, default=0.02)
    parser.add_argument('--work-dir', default='work_dirs/ddp_check')
    parser.add_argument('--amp', action='store_true')
    parser.add_argument('--keep-all-samples', action='store_true',
                        help='use every anchor and RoI (no random subsampling) in both runs')
    args = parser.parse_args(argv)

    os.makedirs(args.work_dir, exist_ok=True)
    config = deterministic_config(args.config, args.iters,
                                  osp.join(args.work_dir, 'ddp_check_config.py'),
                                  args.keep_all_samples)
    extra = ['--amp'] if args.amp else []
    dist_dir, single_dir = osp.join(args.work_dir, 'ddp'), osp.join(args.work_dir, 'single')
    run(['bash', osp.join(REPO, 'tools/dist_train.sh'), config, str(args.gpus), '--work-dir',
         dist_dir, '--cfg-options', f'train_dataloader.batch_size={args.batch_per_gpu}'] + extra,
        osp.join(args.work_dir, 'ddp_train.log'))
    run([sys.executable, osp.join(REPO, 'tools/train.py'), config, '--work-dir', single_dir,
         '--cfg-options', f'train_dataloader.batch_size={args.gpus * args.batch_per_gpu}'] +
        extra, osp.join(args.work_dir, 'single_train.log'))
    rows, ok = compare(read_trace(osp.join(dist_dir, 'loss_trace.jsonl')),
                       read_trace(osp.join(single_dir, 'loss_trace.jsonl')), args.iters,
                       args.tolerance)

    with open(osp.join(dist_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    test_dir = osp.join(args.work_dir, 'test_ddp_checkpoint')
    run([sys.executable, osp.join(REPO, 'tools/test.py'), config, checkpoint, '--work-dir',
         test_dir], osp.join(args.work_dir, 'test.log'))
    metrics = last_metrics(test_dir)

    keys = [k for k in rows[0] if k != 'iter']
    lines = [f'{args.gpus} GPUs x {args.batch_per_gpu} (DDP, rank mean) vs 1 GPU x '
             f'{args.gpus * args.batch_per_gpu}: value DDP / value single (rel. diff)',
             '| iter | ' + ' | '.join(keys) + ' |', '|---' * (len(keys) + 1) + '|']
    for row in rows:
        lines.append(f'| {row["iter"]} | ' + ' | '.join(
            f'{row[k][0]:.4f} / {row[k][1]:.4f} ({100 * row[k][2]:.2f}%)' for k in keys) + ' |')
    mean_d = sum(r['loss'][0] for r in rows) / len(rows)
    mean_s = sum(r['loss'][1] for r in rows) / len(rows)
    lines.append(f'total loss: max per-iteration rel. diff '
                 f'{100 * max(r["loss"][2] for r in rows):.2f}% (tolerance '
                 f'{100 * args.tolerance:.0f}%): {"PASS" if ok else "FAIL"}; mean over the '
                 f'{len(rows)} iterations {mean_d:.4f} vs {mean_s:.4f} '
                 f'({100 * abs(mean_d - mean_s) / mean_s:.2f}%)')
    lines.append(f'single-process tools/test.py on {checkpoint}: {metrics}')
    print_log('\n'.join(lines), logger=MMLogger.get_instance('check_ddp_loss'))
    with open(osp.join(args.work_dir, 'ddp_check.json'), 'w') as f:
        json.dump(dict(config=args.config, gpus=args.gpus, batch_per_gpu=args.batch_per_gpu,
                       keep_all_samples=args.keep_all_samples,
                       tolerance=args.tolerance, passed=ok, rows=rows, checkpoint=checkpoint,
                       test_metrics=metrics), f, indent=1)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
