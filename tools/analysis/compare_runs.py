"""Compare finished training runs side by side: final metrics, s/iter, peak memory, loss curves.

Reads each work dir's ``<timestamp>/vis_data/scalars.json`` (what mmengine's LocalVisBackend
writes during ``tools/train.py``; all launches of a resumed run) and prints a Markdown table::

    python tools/analysis/compare_runs.py work_dirs/det_vmamba:VMamba-T work_dirs/det_swin:Swin-T \
        --metrics coco/bbox_mAP coco/segm_mAP --plot docs/results/toy_det_loss.png

Per run: the last value of each metric, the median training ``time`` (s/iter; mmengine logs it
averaged over the logger's window, the first ``--skip`` fraction of the records is left out as
warm-up), the largest logged ``memory`` (MiB, ``torch.cuda.max_memory_allocated``; CUDA only), and
whether every logged loss term was finite. ``--json`` writes the same numbers to a file.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os.path as osp
import statistics


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('runs', nargs='+', help='WORK_DIR or WORK_DIR:LABEL')
    parser.add_argument('--metrics', nargs='+', required=True,
                        help='validation metrics to report, e.g. coco/bbox_mAP or mIoU')
    parser.add_argument('--skip', type=float, default=0.1,
                        help='fraction of the training records left out of the s/iter median')
    parser.add_argument('--plot', help='write the loss curves (and the metrics) to this PNG')
    parser.add_argument('--title', default='', help='title of the plot')
    parser.add_argument('--json', help='write the table as JSON to this file')
    return parser.parse_args(argv)


def find_scalars(work_dir: str) -> list[str]:
    """Every ``<timestamp>/vis_data/scalars.json`` in ``work_dir``, oldest launch first."""
    found = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not found:
        raise FileNotFoundError(f'no */vis_data/scalars.json in {work_dir}: is it the work dir '
                                'of a tools/train.py run with a LocalVisBackend?')
    return found


def read_run(work_dir: str) -> tuple[list[dict], list[dict]]:
    """Training records (those with ``loss``) and validation records of a run, by iteration.

    A run continued with ``--resume`` spans several launches (timestamp folders); a later
    launch's record replaces an earlier one of the same iteration (the iterations after the
    checkpoint that the interrupted launch had already done).
    """
    train, val = {}, {}
    for path in find_scalars(work_dir):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if 'loss' in record:
                    train[record['iter']] = record
                else:
                    val[record['step']] = record
    return [train[k] for k in sorted(train)], [val[k] for k in sorted(val)]


def summarize(train: list[dict], val: list[dict], metrics: list[str], skip: float) -> dict:
    """Final metrics, median s/iter, peak memory, last loss and finiteness of one run."""
    losses = [(k, v) for r in train for k, v in r.items() if k.startswith('loss') or
              k.endswith('.loss_ce')]
    timed = [r['time'] for r in train[int(len(train) * skip):] if 'time' in r]
    memory = [r['memory'] for r in train if 'memory' in r]
    final = {}
    for name in metrics:
        values = [r[name] for r in val if name in r]
        final[name] = values[-1] if values else None
    return dict(
        iters=train[-1].get('iter') if train else 0,
        metrics=final,
        s_per_iter=statistics.median(timed) if timed else None,
        peak_memory_mib=max(memory) if memory else None,
        last_loss=train[-1]['loss'] if train else None,
        all_losses_finite=all(math.isfinite(v) for _, v in losses),
    )


def plot(runs: dict[str, tuple[list[dict], list[dict]]], metrics: list[str], path: str,
         title: str) -> None:
    """Training loss against iteration for every run, and each metric at its validations."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 1 + len(metrics), figsize=(5 * (1 + len(metrics)), 4))
    for label, (train, val) in runs.items():
        axes[0].plot([r['iter'] for r in train], [r['loss'] for r in train], label=label)
        for ax, name in zip(axes[1:], metrics):
            points = [(r['step'], r[name]) for r in val if name in r]
            if points:
                ax.plot(*zip(*points), marker='o', label=label)
    axes[0].set(xlabel='iteration', ylabel='training loss (window mean)', yscale='log')
    for ax, name in zip(axes[1:], metrics):
        ax.set(xlabel='iteration', ylabel=name)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    args = parse_args(argv)
    runs = {}
    for spec in args.runs:
        work_dir, _, label = spec.partition(':')
        runs[label or osp.basename(osp.normpath(work_dir))] = read_run(work_dir)
    table = {label: summarize(*run, args.metrics, args.skip) for label, run in runs.items()}

    def fmt(value, digits=3):
        return '-' if value is None else f'{value:.{digits}f}'

    header = ['run', 'iters', *args.metrics, 's/iter', 'peak MiB', 'last loss', 'losses finite']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for label, row in table.items():
        cells = [label, str(row['iters']), *(fmt(row['metrics'][m]) for m in args.metrics),
                 fmt(row['s_per_iter']), fmt(row['peak_memory_mib'], 0), fmt(row['last_loss']),
                 'yes' if row['all_losses_finite'] else 'NO']
        lines.append('| ' + ' | '.join(cells) + ' |')
    print('\n'.join(lines))  # noqa: T201 (CLI output)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(table, f, indent=2)
    if args.plot:
        plot(runs, args.metrics, args.plot, args.title)
    return table


if __name__ == '__main__':
    main()
