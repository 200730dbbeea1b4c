# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Generate the embedded ToyShapes dataset.

Example (from the repository root)::

    python tools/misc/make_toy_dataset.py --out data/toy
    python tools/misc/make_toy_dataset.py --out data/toy_small \\
        --num-train 128 --num-val 32 --img-size 64 --fractions 1/8 1
"""
import argparse
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmseg_u2pl.datasets.toy_generator import (  # noqa: E402
    DEFAULT_FRACTIONS, DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL,
    generate_toy_dataset)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate the ToyShapes semi-supervised segmentation '
        'dataset (images, labels, labeled/unlabeled split lists).')
    parser.add_argument(
        '--out', default='data/toy', help='output folder (data_root)')
    parser.add_argument(
        '--num-train',
        type=int,
        default=DEFAULT_NUM_TRAIN,
        help='training images')
    parser.add_argument(
        '--num-val',
        type=int,
        default=DEFAULT_NUM_VAL,
        help='validation images')
    parser.add_argument(
        '--img-size', type=int, default=96, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument(
        '--fractions',
        nargs='+',
        default=list(DEFAULT_FRACTIONS),
        help='labeled fractions of the training set, space or comma '
        'separated (default: %(default)s)')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace a dataset generated with other arguments')
    args = parser.parse_args(argv)
    args.fractions = [
        f.strip() for item in args.fractions for f in item.split(',')
        if f.strip()
    ]
    return args


def format_summary(summary: dict) -> str:
    """Human-readable summary of :func:`generate_toy_dataset`'s result."""
    state = ('already up to date, nothing written'
             if summary['reused'] else 'generated')
    lines = [
        f"ToyShapes dataset in {summary['out_dir']}: {state} "
        f"({summary['time_s']:.2f} s)", 'split files (lines):'
    ]
    for name, count in summary['split_counts'].items():
        lines.append(f'  splits/{name}.txt: {count}')
    lines.append('class pixel frequency (train):')
    for name, freq in summary['class_pixel_freq_train'].items():
        lines.append(f'  {name:<10s} {100 * freq:6.2f} %')
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = generate_toy_dataset(
            args.out,
            num_train=args.num_train,
            num_val=args.num_val,
            img_size=args.img_size,
            seed=args.seed,
            fractions=args.fractions,
            overwrite=args.overwrite)
    except (FileExistsError, ValueError, TypeError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
