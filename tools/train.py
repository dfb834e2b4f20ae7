"""Train a model from an mmdet, mmseg or mmpretrain config with mmengine's Runner.

    python tools/train.py configs/toy/maskrcnn_vmamba_toy.py
    python tools/train.py configs/maskrcnn_vmamba_t.py --amp --work-dir work_dirs/t \
        --cfg-options model.backbone.init_cfg.checkpoint=ckpts/vssm1_tiny_0230s_ckpt_epoch_264.pth
    python tools/train.py CONFIG --resume            # latest checkpoint in the work dir
    python tools/train.py CONFIG --resume PATH.pth   # that checkpoint

Several processes: tools/dist_train.sh CONFIG NUM_PROCS [args]. Toy configs create their data
set on first use (see mmvmamba.datasets.toy).
"""
import argparse

from mmengine.config import DictAction

from mmvmamba.engine.launch import (
    apply_amp,
    apply_resume,
    build_runner,
    close_process_group,
    load_config,
    local_rank_to_env,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model (mmdet / mmseg / mmpretrain)')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='folder for logs and checkpoints')
    parser.add_argument('--amp', action='store_true',
                        help='mixed-precision training (AmpOptimWrapper, dynamic loss scale)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or without a value from the latest '
                        'checkpoint in the work dir')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_epochs=2 '
                        'model.backbone.init_cfg=None')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    local_rank_to_env(args.local_rank)
    cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher)
    if args.amp:
        apply_amp(cfg)
    apply_resume(cfg, args.resume)
    build_runner(cfg).train()
    close_process_group()


if __name__ == '__main__':
    main()
