# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Generate an embedded dataset: ToyShapes (6 classes) or ToyShapes21.

Example (from the repository root)::

    python tools/dataset_converters/make_toy_dataset.py --out data/toy
    python tools/dataset_converters/make_toy_dataset.py --out data/toy_small \\
        --num-train 128 --num-val 32 --img-size 64 --fractions 1/8 1
    python tools/dataset_converters/make_toy_dataset.py --dataset toy21 \\
        --out data/toy21
"""
import argparse
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import toy_shapes  # noqa: E402
import toy_shapes21  # noqa: E402

#: --dataset -> (display name, generate function, default arguments)
DATASETS = {
    'toy': ('ToyShapes', toy_shapes.generate_toy_dataset,
            dict(
                num_train=toy_shapes.DEFAULT_NUM_TRAIN,
                num_val=toy_shapes.DEFAULT_NUM_VAL,
                img_size=96,
                fractions=list(toy_shapes.DEFAULT_FRACTIONS))),
    'toy21': ('ToyShapes21', toy_shapes21.generate_toy21_dataset,
              dict(
                  num_train=toy_shapes21.DEFAULT_NUM_TRAIN,
                  num_val=toy_shapes21.DEFAULT_NUM_VAL,
                  img_size=toy_shapes21.DEFAULT_IMG_SIZE,
                  fractions=list(toy_shapes21.DEFAULT_FRACTIONS))),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate an embedded semi-supervised segmentation '
        'dataset (images, labels, labeled/unlabeled split lists).')
    parser.add_argument(
        '--dataset',
        choices=list(DATASETS),
        default='toy',
        help='toy: ToyShapes, 6 classes; toy21: ToyShapes21, 21 classes '
        '(default: %(default)s)')
    parser.add_argument(
        '--out',
        default=None,
        help='output folder (data_root; default: data/<dataset>)')
    parser.add_argument(
        '--num-train',
        type=int,
        default=None,
        help='training images (default: 128 toy, 512 toy21)')
    parser.add_argument(
        '--num-val',
        type=int,
        default=None,
        help='validation images (default: 256)')
    parser.add_argument(
        '--img-size',
        type=int,
        default=None,
        help='image side in pixels (default: 96)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument(
        '--fractions',
        nargs='+',
        default=None,
        help='labeled fractions of the training set, space or comma '
        'separated (default: 1/16 1/8 1/4 1/2 1; toy21 adds 1/32)')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='replace a dataset generated with other arguments')
    args = parser.parse_args(argv)
    defaults = DATASETS[args.dataset][2]
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = osp.join('data', args.dataset)
    args.fractions = [
        f.strip() for item in args.fractions for f in item.split(',')
        if f.strip()
    ]
    return args


def format_summary(summary: dict, dataset_name: str = 'ToyShapes') -> str:
    """Human-readable summary of :func:`generate_toy_dataset`'s result."""
    state = ('already up to date, nothing written'
             if summary['reused'] else 'generated')
    width = max(10, max(map(len, summary['class_pixel_freq_train'])))
    lines = [
        f"{dataset_name} dataset in {summary['out_dir']}: {state} "
        f"({summary['time_s']:.2f} s)", 'split files (lines):'
    ]
    for name, count in summary['split_counts'].items():
        lines.append(f'  splits/{name}.txt: {count}')
    lines.append('class pixel frequency (train):')
    for name, freq in summary['class_pixel_freq_train'].items():
        lines.append(f'  {name:<{width}s} {100 * freq:6.2f} %')
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    name, generate, _ = DATASETS[args.dataset]
    try:
        summary = generate(
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
    print(format_summary(summary, name))
    return 0


if __name__ == '__main__':
    sys.exit(main())
