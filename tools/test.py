"""Evaluate a checkpoint with an mmdet, mmseg or mmpretrain config (mmengine's Runner).

    python tools/test.py configs/toy/maskrcnn_vmamba_toy.py \
        work_dirs/maskrcnn_vmamba_toy/epoch_12.pth
    python tools/test.py configs/upernet_vmamba_t_ade20k.py CKPT --tta   # flip + multi-scale
    python tools/test.py CONFIG CKPT --out results.pkl                  # also dump predictions

Several processes: tools/dist_test.sh CONFIG CKPT NUM_PROCS [args].
"""
import argparse

from mmengine.config import DictAction

from mmvmamba.engine.launch import (
    apply_tta,
    build_runner,
    close_process_group,
    load_config,
    local_rank_to_env,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (evaluate) a checkpoint')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='folder for the evaluation logs and metrics')
    parser.add_argument('--out', help='also dump the raw predictions to this .pkl file')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation from the config's tta_model/tta_pipeline")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. test_dataloader.batch_size=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    local_rank_to_env(args.local_rank)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    cfg.load_from = args.checkpoint
    if args.tta:
        apply_tta(cfg)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise SystemExit(f'--out must end with .pkl or .pickle, got {args.out}')
        evaluator = cfg.test_evaluator
        evaluator = list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]
        evaluator.append(dict(type='DumpResults', out_file_path=args.out))
        cfg.test_evaluator = evaluator
    build_runner(cfg).test()
    close_process_group()


if __name__ == '__main__':
    main()
