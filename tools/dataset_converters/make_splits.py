# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Draw a seeded labeled/unlabeled split in mmseg ``ann_file`` format.

The drawing functions live in this script with its command line (about 400
lines): no other tool draws splits, and the tests import them from here.

Examples:
    # 1/16 of the VOC augmented training set (the blender setting)
    python tools/dataset_converters/make_splits.py \
        --list data/splits/voc/train_aug.txt --fraction 1/16 --seed 0 \
        --out-dir data/splits/voc/blender_1-16_s0

    # 186 Cityscapes images, every class labeled at least once
    python tools/dataset_converters/make_splits.py \
        --img-dir data/cityscapes/leftImg8bit/train \
        --img-suffix _leftImg8bit.png --num-labeled 186 \
        --label-dir data/cityscapes/gtFine/train \
        --label-suffix _gtFine_labelTrainIds.png --num-classes 19 \
        --require-all-classes --out-dir data/splits/cityscapes/186_s0
"""
import argparse
import hashlib
import os
import os.path as osp
import sys
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from split_utils import (TRAINID_HINT, PathLike, Share, invalid_values,
                         num_from_fraction, parse_fraction, read_label,
                         read_split_list, validate_entries, write_split_list)

LabelPaths = Union[Sequence[PathLike], Mapping[str, PathLike]]


# ---------------------------------------------------------------------------
# drawing a split
# ---------------------------------------------------------------------------
def _draw_key(seed: int, attempt: int, name: str) -> bytes:
    return hashlib.sha256(f'{seed}/{attempt}/{name}'.encode()).digest()


def _draw(names: Sequence[str], num_labeled: int, seed: int,
          attempt: int) -> np.ndarray:
    """Boolean labeled mask: the ``num_labeled`` names of smallest hash.

    A keyed hash makes the draw depend only on the seed, the attempt and the
    set of names (not their order), identically on every platform and
    Python/numpy version.
    """
    order = sorted(
        range(len(names)), key=lambda i: _draw_key(seed, attempt, names[i]))
    mask = np.zeros(len(names), dtype=bool)
    mask[order[:num_labeled]] = True
    return mask


def load_class_presence(label_paths: Sequence[PathLike],
                        num_classes: int,
                        ignore_index: int = 255) -> np.ndarray:
    """Which classes each label map contains.

    Args:
        label_paths (Sequence[str | PathLike]): Label maps of class indices.
        num_classes (int): Valid classes are ``[0, num_classes)``.
        ignore_index (int): Value that is not a class. Defaults to 255.

    Returns:
        np.ndarray: Bool array ``(len(label_paths), num_classes)``.

    Raises:
        FileNotFoundError: If a label map is missing.
        ValueError: If a label map holds values outside the classes and the
            ignore index.
    """
    presence = np.zeros((len(label_paths), num_classes), dtype=bool)
    for row, path in enumerate(label_paths):
        path = os.fspath(path)
        values = np.unique(read_label(path))
        bad = invalid_values(values, num_classes, ignore_index)
        if bad.size:
            raise ValueError(
                f'label map {path!r} holds values {bad.tolist()} outside '
                f'[0, {num_classes}) and the ignore index {ignore_index}; '
                'check num_classes. ' + TRAINID_HINT)
        values = values[values != ignore_index]
        presence[row, values] = True
    return presence


def class_image_frequency(class_presence: np.ndarray,
                          mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Per class, the number of images that contain it.

    Args:
        class_presence (np.ndarray): Bool ``(N, C)``, see
            :func:`load_class_presence`.
        mask (np.ndarray, optional): Bool ``(N,)`` selecting images (e.g. the
            labeled ones). Defaults to None (all).

    Returns:
        np.ndarray: Int ``(C,)``.
    """
    rows = class_presence if mask is None else class_presence[mask]
    return rows.sum(axis=0).astype(np.int64)


def format_class_frequency(labeled_counts: Sequence[int],
                           all_counts: Sequence[int],
                           num_labeled: int,
                           num_all: int,
                           class_names: Optional[Sequence[str]] = None) -> str:
    """A text table: images containing each class, labeled vs all.

    Args:
        labeled_counts (Sequence[int]): Per class, labeled images with it.
        all_counts (Sequence[int]): Per class, images with it in the pool.
        num_labeled (int): Labeled images.
        num_all (int): Images in the pool.
        class_names (Sequence[str], optional): Names for the rows; defaults
            to the class indices.

    Returns:
        str: The table, one class per row, missing classes marked.
    """
    if class_names is None:
        class_names = [str(c) for c in range(len(all_counts))]
    width = max([5] + [len(n) for n in class_names])
    lines = [
        f'{"class":<{width}}  {"labeled":>8} {"%":>6}  {"all":>8} {"%":>6}'
    ]
    for name, n_lab, n_all in zip(class_names, labeled_counts, all_counts):
        p_lab = 100. * n_lab / max(num_labeled, 1)
        p_all = 100. * n_all / max(num_all, 1)
        flag = '  <- missing from labeled' if n_lab == 0 else ''
        lines.append(f'{name:<{width}}  {n_lab:>8d} {p_lab:>6.1f}  '
                     f'{n_all:>8d} {p_all:>6.1f}{flag}')
    return '\n'.join(lines)


def _label_path_list(names: Sequence[str], label_paths: LabelPaths) -> List:
    if isinstance(label_paths, Mapping):
        missing = [n for n in names if n not in label_paths]
        if missing:
            raise ValueError(f'label_paths has no entry for {missing[0]!r} '
                             f'({len(missing)} names without a label path)')
        return [label_paths[n] for n in names]
    label_paths = list(label_paths)
    if len(label_paths) != len(names):
        raise ValueError(f'label_paths has {len(label_paths)} paths for '
                         f'{len(names)} names; give one per name, in order')
    return label_paths


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def make_split(names: Sequence[str],
               num_labeled: Optional[int] = None,
               fraction: Optional[Share] = None,
               seed: int = 0,
               label_paths: Optional[LabelPaths] = None,
               num_classes: Optional[int] = None,
               require_all_classes: bool = False,
               class_presence: Optional[np.ndarray] = None,
               max_tries: int = 100,
               ignore_index: int = 255) -> Tuple[List[str], List[str]]:
    """Draw a seeded labeled/unlabeled split of ``names``.

    The labeled set is the ``num_labeled`` names whose keyed hash
    ``sha256(f'{seed}/{attempt}/{name}')`` is smallest: uniformly random,
    deterministic, and independent of the order of ``names``, the platform
    and library versions. Both outputs keep the order of ``names``.

    With ``require_all_classes`` the draw is repeated with ``attempt = 1,
    2, ...`` until every class occurs in at least one labeled image; the
    first attempt is the plain draw, so the flag changes nothing when that
    draw already covers every class.

    Example:
        >>> labeled, unlabeled = make_split(
        ...     read_split_list('data/splits/voc/train_aug.txt'),
        ...     fraction='1/16', seed=0)

    Args:
        names (Sequence[str]): The pool, unique entries.
        num_labeled (int, optional): Labeled count, in ``[1, len(names)]``.
        fraction (str | float | Fraction, optional): Labeled share; the
            count is rounded up (see :func:`num_from_fraction`). Give exactly
            one of ``num_labeled`` and ``fraction``.
        seed (int): Seed. Defaults to 0.
        label_paths (Sequence | Mapping, optional): Label maps of ``names``
            (in order, or name -> path) for the class check.
        num_classes (int, optional): Classes, needed with ``label_paths``.
        require_all_classes (bool): Re-draw until every class is labeled.
            Defaults to False.
        class_presence (np.ndarray, optional): Precomputed
            :func:`load_class_presence` of ``names``, instead of
            ``label_paths``.
        max_tries (int): Draws before giving up. Defaults to 100.
        ignore_index (int): Not a class in the label maps. Defaults to 255.

    Returns:
        tuple[list[str], list[str]]: ``(labeled, unlabeled)``.

    Raises:
        ValueError: On bad arguments, or if some class occurs in no image of
            the pool while ``require_all_classes`` is set.
        RuntimeError: If no draw within ``max_tries`` covers every class.
    """
    names = validate_entries(names, 'make_split names')
    if not names:
        raise ValueError('make_split got no names to split')
    if (num_labeled is None) == (fraction is None):
        raise ValueError('give exactly one of num_labeled and fraction, got '
                         f'num_labeled={num_labeled}, fraction={fraction}')
    if fraction is not None:
        num_labeled = num_from_fraction(len(names), fraction)
    if not _is_int(num_labeled) or not 1 <= num_labeled <= len(names):
        raise ValueError(f'num_labeled must be an int in [1, {len(names)}] '
                         f'(the pool size), got {num_labeled!r}')
    if not _is_int(seed):
        raise ValueError(f'seed must be an int, got {seed!r}')
    if max_tries < 1:
        raise ValueError(f'max_tries must be >= 1, got {max_tries}')

    if class_presence is None and label_paths is not None:
        if num_classes is None:
            raise ValueError('num_classes is needed with label_paths')
        class_presence = load_class_presence(
            _label_path_list(names, label_paths), num_classes, ignore_index)
    if require_all_classes:
        if class_presence is None:
            raise ValueError('require_all_classes needs label_paths (and '
                             'num_classes) or class_presence')
        if class_presence.shape[0] != len(names):
            raise ValueError(f'class_presence has {class_presence.shape[0]} '
                             f'rows for {len(names)} names')
        absent = np.flatnonzero(class_image_frequency(class_presence) == 0)
        if absent.size:
            raise ValueError(
                f'classes {absent.tolist()} occur in no image of the pool, '
                'so no labeled subset can contain them; check num_classes '
                'and the label maps, or drop require_all_classes')

    missed = None
    for attempt in range(max_tries):
        mask = _draw(names, int(num_labeled), int(seed), attempt)
        if not require_all_classes:
            break
        labeled_freq = class_image_frequency(class_presence, mask)
        if (labeled_freq > 0).all():
            break
        missed = (missed if missed is not None else 0) + (labeled_freq == 0)
    else:
        worst = np.argsort(-missed, kind='stable')[:5]
        report = ', '.join(f'class {c} in {missed[c]} draws' for c in worst
                           if missed[c])
        raise RuntimeError(
            f'no draw of {num_labeled} labeled images out of {len(names)} '
            f'(seed {seed}, {max_tries} tries) contains every class; most '
            f'often missing: {report}. Label more images, try another seed, '
            'raise max_tries or drop require_all_classes.')
    labeled = [n for n, m in zip(names, mask) if m]
    unlabeled = [n for n, m in zip(names, mask) if not m]
    return labeled, unlabeled


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------
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
