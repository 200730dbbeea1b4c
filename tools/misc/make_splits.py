# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Draw a seeded labeled/unlabeled split in mmseg ``ann_file`` format.

Examples:
    # 1/16 of the VOC augmented training set (the blender setting)
    python tools/misc/make_splits.py --list data/splits/voc/train_aug.txt \
        --fraction 1/16 --seed 0 --out-dir data/splits/voc/blender_1-16_s0

    # 186 Cityscapes images, every class labeled at least once
    python tools/misc/make_splits.py \
        --img-dir data/cityscapes/leftImg8bit/train \
        --img-suffix _leftImg8bit.png --num-labeled 186 \
        --label-dir data/cityscapes/gtFine/train \
        --label-suffix _gtFine_labelTrainIds.png --num-classes 19 \
        --require-all-classes --out-dir data/splits/cityscapes/186_s0
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0,
                osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmseg_u2pl.datasets.splits import (  # noqa: E402
    class_image_frequency, format_class_frequency, load_class_presence,
    make_split, parse_fraction, read_split_list, write_split_list)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Draw a seeded labeled/unlabeled split and write '
        'labeled.txt / unlabeled.txt (one entry per line, the image path '
        'relative to img_path without its suffix).')
    pool = parser.add_mutually_exclusive_group(required=True)
    pool.add_argument(
        '--list', help='file listing the pool, one entry per line')
    pool.add_argument(
        '--img-dir',
        help='image folder; entries are the paths of the images below it '
        '(searched recursively) without --img-suffix')
    parser.add_argument(
        '--img-suffix',
        default='.jpg',
        help='image suffix with --img-dir (default: .jpg)')
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument('--num-labeled', type=int, help='labeled images')
    size.add_argument(
        '--fraction',
        help='labeled share, e.g. 1/16 or 0.0625 (the count is rounded up)')
    parser.add_argument('--seed', type=int, default=0, help='default: 0')
    parser.add_argument('--out-dir', required=True, help='output folder')
    parser.add_argument(
        '--label-dir',
        help='label maps, at <label-dir>/<entry><label-suffix>; enables the '
        'class-frequency table')
    parser.add_argument('--label-suffix', default='.png', help='default: .png')
    parser.add_argument('--num-classes', type=int, help='with --label-dir')
    parser.add_argument(
        '--ignore-index', type=int, default=255, help='default: 255')
    parser.add_argument(
        '--require-all-classes',
        action='store_true',
        help='re-draw (deterministically) until every class occurs in a '
        'labeled image')
    parser.add_argument(
        '--max-tries',
        type=int,
        default=100,
        help='draws before giving up with --require-all-classes')
    args = parser.parse_args(argv)
    if args.label_dir is not None and args.num_classes is None:
        parser.error('--label-dir needs --num-classes')
    if args.require_all_classes and args.label_dir is None:
        parser.error('--require-all-classes needs --label-dir')
    return args


def scan_images(img_dir: str, img_suffix: str) -> list:
    """Entries of every ``*img_suffix`` file below ``img_dir``, sorted."""
    if not osp.isdir(img_dir):
        raise FileNotFoundError(f'--img-dir {img_dir!r} is not a folder')
    names = []
    for root, _, files in os.walk(img_dir):
        for file in files:
            if file.endswith(img_suffix) and len(file) > len(img_suffix):
                rel = osp.relpath(osp.join(root, file), img_dir)
                names.append(rel[:-len(img_suffix)].replace(os.sep, '/'))
    if not names:
        raise FileNotFoundError(
            f'no file ending with {img_suffix!r} below {img_dir!r}; check '
            '--img-dir and --img-suffix')
    return sorted(names)


def run(args: argparse.Namespace) -> None:
    if args.list is not None:
        names = read_split_list(args.list)
        if not names:
            raise ValueError(f'--list {args.list!r} holds no entries')
    else:
        names = scan_images(args.img_dir, args.img_suffix)
    fraction = None if args.fraction is None else parse_fraction(args.fraction)

    presence = None
    if args.label_dir is not None:
        label_paths = [
            osp.join(args.label_dir, name + args.label_suffix)
            for name in names
        ]
        missing = [p for p in label_paths if not osp.isfile(p)]
        if missing:
            raise FileNotFoundError(
                f'label map {missing[0]!r} does not exist ({len(missing)} '
                f'of {len(names)} missing); check --label-dir and '
                '--label-suffix')
        presence = load_class_presence(label_paths, args.num_classes,
                                       args.ignore_index)

    labeled, unlabeled = make_split(
        names,
        num_labeled=args.num_labeled,
        fraction=fraction,
        seed=args.seed,
        require_all_classes=args.require_all_classes,
        class_presence=presence,
        max_tries=args.max_tries)
    write_split_list(osp.join(args.out_dir, 'labeled.txt'), labeled)
    write_split_list(osp.join(args.out_dir, 'unlabeled.txt'), unlabeled)

    share = f', fraction {fraction}' if fraction is not None else ''
    print(f'labeled: {len(labeled)}, unlabeled: {len(unlabeled)}, total: '
          f'{len(names)} (seed {args.seed}{share})')
    print(f'written to {osp.join(args.out_dir, "labeled.txt")} and '
          f'{osp.join(args.out_dir, "unlabeled.txt")}')
    if presence is not None:
        labeled_set = set(labeled)
        mask = [name in labeled_set for name in names]
        print('images containing each class:')
        print(
            format_class_frequency(
                class_image_frequency(presence, mask),
                class_image_frequency(presence), len(labeled), len(names)))


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        sys.exit(f'error: {err}')


if __name__ == '__main__':
    main()
