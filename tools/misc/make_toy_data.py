"""Write mmvmamba's synthetic toy data sets (no download needed).

    python tools/misc/make_toy_data.py                     # both sets into data/toy/{coco,ade}
    python tools/misc/make_toy_data.py --kind coco --root /tmp/toy_coco --num-train 8

The same arguments always give the same files (seeded). The toy configs and tools/train.py create
the data on first use, so running this by hand is optional.
"""
import argparse
from pathlib import Path

from mmvmamba.datasets.toy import make_toy_data


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--kind', choices=['coco', 'ade', 'all'], default='all',
                        help='which set: COCO instances, ADE20K-layout segmentation, or both')
    parser.add_argument('--root', default=None,
                        help='output folder (default data/toy/<kind>; only with one --kind)')
    parser.add_argument('--num-train', type=int, default=64)
    parser.add_argument('--num-val', type=int, default=16)
    parser.add_argument('--height', type=int, default=128)
    parser.add_argument('--width', type=int, default=160)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--overwrite', action='store_true', help='replace an existing folder')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    kinds = ['coco', 'ade'] if args.kind == 'all' else [args.kind]
    if args.root is not None and len(kinds) > 1:
        raise SystemExit('--root needs one --kind (coco or ade)')
    for kind in kinds:
        root = Path(args.root) if args.root else Path('data/toy') / kind
        make_toy_data(root, kind, num_train=args.num_train, num_val=args.num_val,
                      height=args.height, width=args.width, seed=args.seed,
                      overwrite=args.overwrite)
        print(f'wrote toy {kind} data to {root}')  # noqa: T201  (CLI output)


if __name__ == '__main__':
    main()
