"""Convert a reference VMamba checkpoint into an mmvmamba one.

Usage::

    python tools/model_converters/vmamba2mmvmamba.py SRC DST [--to backbone|mmpretrain|model]
        [--ema] [--unsafe-allow-pickle]

SRC may be any format :mod:`mmvmamba.utils.checkpoint` recognises: a released ImageNet
checkpoint (``model`` / ``model_ema``), a released mmdet/mmseg checkpoint (``state_dict`` with
``backbone.``), an mmpretrain classifier, or a file this tool wrote (converting it again changes
nothing). DST holds tensors only and loads with ``torch.load(weights_only=True)``:

- ``--to backbone`` (default): the backbone for mmdet/mmseg configs
  (``init_cfg=dict(type='Pretrained', checkpoint=DST)``); classifier keys are dropped.
- ``--to mmpretrain``: the whole mmpretrain ``ImageClassifier`` (VMamba(out_indices=(3,)) +
  GlobalAveragePooling + LinearClsHead) for ``load_from``; needs a classifier checkpoint.
- ``--to model``: a whole detector or segmentor (backbone renamed, neck and heads kept, class
  names kept) for ``tools/test.py``; needs an mmdet/mmseg checkpoint. Use it when tools/test.py
  refuses a released file for its pickled extras.

Released ImageNet checkpoints embed their training config as a pickled object, which a safe load
refuses; ``--unsafe-allow-pickle`` reads such a file with ``weights_only=False`` (it can run code:
only for files you trust). DST never holds such objects.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp

import torch

from mmvmamba.utils import load_third_party
from mmvmamba.utils.checkpoint import (
    load_checkpoint_file,
    to_backbone_checkpoint,
    to_mmpretrain_checkpoint,
    to_whole_model_checkpoint,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='reference (or already converted) checkpoint')
    parser.add_argument('dst', help='output file')
    parser.add_argument('--to', choices=('backbone', 'mmpretrain', 'model'), default='backbone',
                        help='output layout (default: backbone, the ImageNet initialisation of '
                        'mmdet/mmseg configs; model: a whole detector/segmentor for test.py)')
    parser.add_argument('--ema', action='store_true',
                        help='take model_ema of an ImageNet checkpoint instead of model')
    parser.add_argument('--unsafe-allow-pickle', action='store_true',
                        help='read SRC with weights_only=False (runs pickled code: trusted '
                        'files only), e.g. released ImageNet checkpoints with a yacs config')
    return parser.parse_args(argv)


def convert(src: str, dst: str, to: str = 'backbone', ema: bool = False,
            allow_pickle: bool = False) -> dict:
    """Convert ``src`` into ``dst`` and return what was saved.

    Args:
        src (str): Source checkpoint path.
        dst (str): Output path (its folder is created).
        to (str): 'backbone', 'mmpretrain' or 'model'.
        ema (bool): Take ``model_ema`` of an ImageNet checkpoint.
        allow_pickle (bool): Read ``src`` with ``weights_only=False``.

    Returns:
        dict: The saved checkpoint (``state_dict`` and ``meta``).
    """
    if to == 'model':
        if ema:
            raise ValueError('--ema picks the EMA weights of an ImageNet checkpoint; --to model '
                             'converts mmdet/mmseg checkpoints, which have none')
        out = to_whole_model_checkpoint(load_third_party(src, allow_pickle=allow_pickle))
    else:
        ref = load_checkpoint_file(src, use_ema=ema, allow_pickle=allow_pickle)
        out = (to_mmpretrain_checkpoint(ref) if to == 'mmpretrain' else
               to_backbone_checkpoint(ref))
    out['state_dict'] = type(out['state_dict'])(
        (k, v.contiguous()) for k, v in out['state_dict'].items())
    if osp.dirname(dst):
        os.makedirs(osp.dirname(dst), exist_ok=True)
    torch.save(out, dst)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = convert(args.src, args.dst, to=args.to, ema=args.ema,
                  allow_pickle=args.unsafe_allow_pickle)
    num = sum(v.numel() for v in out['state_dict'].values())
    print(f'{args.src} -> {args.dst}: {args.to} layout, {len(out["state_dict"])} tensors, '  # noqa: T201
          f'{num:,} parameters')


if __name__ == '__main__':
    main()
