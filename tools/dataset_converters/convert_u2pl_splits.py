# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Convert the split lists published with U2PL to mmseg ``ann_file`` lists.

The conversion functions live in this script with its command line (about
500 lines): no other tool uses them, and the tests import them from here.

Every ``<src>/<n>/labeled.txt`` + ``unlabeled.txt`` becomes
``<out-dir>/<n>/labeled.txt`` + ``unlabeled.txt`` (published order kept) and
``<src>/val.txt`` becomes ``<out-dir>/val.txt``. Each pair is checked:
disjoint, ``n`` labeled images, a published U2PL count, labeled + unlabeled
= the training set (10,582 VOC / 2,975 Cityscapes), the same training set
for every split, and for VOC classic splits, labeled images from the 1,464
finely annotated ones (when the ``1464`` split is present). A table is
printed; the exit status is 1 if any check failed.

Examples:
    python tools/dataset_converters/convert_u2pl_splits.py \\
        --src u2pl-splits/pascal --dataset voc --out-dir data/splits/voc
    python tools/dataset_converters/convert_u2pl_splits.py \\
        --src u2pl-splits/cityscapes --dataset cityscapes \\
        --out-dir data/splits/cityscapes --data-root data/cityscapes
"""
import argparse
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Optional, Sequence, Union

from split_utils import (PathLike, SplitEntries, check_split,
                         read_split_entries, write_split_list)

DATASETS = ('voc', 'cityscapes')

#: Where images and label maps live below ``data_root``, as in mmseg's
#: ``PascalVOCDataset`` (with the SBD-augmented labels written by mmseg's
#: ``tools/dataset_converters/voc_aug.py``) and ``CityscapesDataset``.
DATASET_LAYOUTS: Dict[str, Dict[str, str]] = {
    'voc':
    dict(
        img_path='JPEGImages',
        img_suffix='.jpg',
        seg_map_path='SegmentationClassAug',
        seg_map_suffix='.png'),
    'cityscapes':
    dict(
        img_path='leftImg8bit/train',
        img_suffix='_leftImg8bit.png',
        seg_map_path='gtFine/train',
        seg_map_suffix='_gtFine_labelTrainIds.png'),
}

#: The splits published with U2PL: training-set size and, per setting,
#: labeled count -> share of the labeled pool it was drawn from.
U2PL_PUBLISHED_SPLITS: Dict[str, Dict] = {
    'voc':
    dict(
        num_total=10582,
        settings=dict(
            classic={
                92: '1/16',
                183: '1/8',
                366: '1/4',
                732: '1/2',
                1464: 'full'
            },
            blender={
                662: '1/16',
                1323: '1/8',
                2646: '1/4',
                5291: '1/2'
            })),
    'cityscapes':
    dict(
        num_total=2975,
        settings=dict(default={
            186: '1/16',
            372: '1/8',
            744: '1/4',
            1488: '1/2'
        })),
}
#: The VOC split whose labeled list is the 1,464 finely annotated images.
VOC_FINE_SPLIT = '1464'

_VOC_ID = r'\d{4}_\d{6}'
_VOC_ID_RE = re.compile(rf'^{_VOC_ID}$')
_VOC_PATH_RE = re.compile(rf'^(?:.*/)?JPEGImages/({_VOC_ID})\.jpg$')
_VOC_LABEL_RE = re.compile(
    rf'^(?:.*/)?SegmentationClass(?:Aug)?/({_VOC_ID})\.png$')
_CITY_NAME = r'([a-z_]+)/(\2_\d{6}_\d{6})'
_CITY_PATH_RE = re.compile(
    rf'^(?:.*/)?leftImg8bit/(train|val|test)/{_CITY_NAME}_leftImg8bit\.png$')
_CITY_ENTRY_RE = re.compile(r'^([a-z_]+)/(\1_\d{6}_\d{6})$')

_EXPECTED_FORMAT = {
    'voc':
    "an image id such as '2007_000033' or an image path such as "
    "'JPEGImages/2007_000033.jpg' (optionally followed by its label path)",
    'cityscapes':
    "'leftImg8bit/train/<city>/<city>_<seq>_<frame>_leftImg8bit.png', e.g. "
    "'leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png' "
    "(or the converted form 'aachen/aachen_000000_000019')",
}


# ---------------------------------------------------------------------------
# converting the published lists
# ---------------------------------------------------------------------------
def _check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise ValueError(f'dataset must be one of {DATASETS}, got {dataset!r}')
    return dataset


def convert_u2pl_entry(line: str,
                       dataset: str,
                       subset: Optional[str] = None) -> str:
    """Convert one line of a U2PL split list to an mmseg ``ann_file`` entry.

    - ``voc``: ids such as ``2007_000033`` are kept; image paths such as
      ``JPEGImages/2007_000033.jpg`` (with any leading directories, and
      optionally followed by the label path of the same id, as in DeepLab's
      ``train_aug.txt``) are reduced to the id.
    - ``cityscapes``: ``leftImg8bit/<subset>/<city>/<name>_leftImg8bit.png``
      becomes ``<city>/<name>`` (relative to ``leftImg8bit/<subset>``);
      already converted entries ``<city>/<name>`` are kept.

    Args:
        line (str): One line; surrounding whitespace is ignored.
        dataset (str): ``'voc'`` or ``'cityscapes'``.
        subset (str, optional): For Cityscapes paths, the required
            ``leftImg8bit`` sub-folder (``'train'``, ``'val'``); None accepts
            any. Defaults to None.

    Returns:
        str: The converted entry.

    Raises:
        ValueError: If the line does not have the expected format (the
            message shows it).
    """
    _check_dataset(dataset)
    text = line.strip()
    expected = f'expected {_EXPECTED_FORMAT[dataset]}'
    if dataset == 'voc':
        if _VOC_ID_RE.match(text):
            return text
        fields = text.split()
        match = _VOC_PATH_RE.match(fields[0]) if fields else None
        if match is None or len(fields) > 2:
            raise ValueError(f'cannot parse {text!r} as a VOC entry; '
                             f'{expected}')
        if len(fields) == 2:
            label = _VOC_LABEL_RE.match(fields[1])
            if label is None or label.group(1) != match.group(1):
                raise ValueError(
                    f'cannot parse {text!r} as a VOC entry: the second field '
                    f'is not the label path of {match.group(1)!r}; '
                    f'{expected}')
        return match.group(1)
    if _CITY_ENTRY_RE.match(text):
        return text
    match = _CITY_PATH_RE.match(text)
    if match is None:
        raise ValueError(f'cannot parse {text!r} as a Cityscapes entry; '
                         f'{expected}')
    if subset is not None and match.group(1) != subset:
        raise ValueError(
            f'{text!r} is an image of leftImg8bit/{match.group(1)}, but this '
            f'list must only hold images of leftImg8bit/{subset}')
    return f'{match.group(2)}/{match.group(3)}'


def _convert_entries(src: str, dataset: str,
                     subset: Optional[str]) -> SplitEntries:
    """Converted entries of a U2PL list with their source line numbers."""
    converted = []
    first_line: Dict[str, int] = {}
    for lineno, line in read_split_entries(src).lines:
        try:
            entry = convert_u2pl_entry(line, dataset, subset=subset)
        except ValueError as err:
            raise ValueError(f'{src!r}, line {lineno}: {err}') from None
        if entry in first_line:
            raise ValueError(
                f'split list {src!r}: lines {first_line[entry]} and {lineno} '
                f'both name the image {entry!r}; remove one of them.')
        first_line[entry] = lineno
        converted.append((lineno, entry))
    return SplitEntries(src, converted)


def convert_u2pl_list(src: PathLike,
                      dataset: str,
                      out_file: Optional[PathLike] = None,
                      subset: Optional[str] = None) -> List[str]:
    """Convert one published list file, keeping its order.

    Args:
        src (str | PathLike): A U2PL list (``labeled.txt``, ``val.txt``...).
        dataset (str): ``'voc'`` or ``'cityscapes'``.
        out_file (str | PathLike, optional): Where to write the converted
            list; None writes nothing. Defaults to None.
        subset (str, optional): See :func:`convert_u2pl_entry`.

    Returns:
        list[str]: The converted entries.

    Raises:
        ValueError: On a malformed line (names the file and line number) or
            a duplicated entry.
    """
    _check_dataset(dataset)
    converted = _convert_entries(os.fspath(src), dataset, subset).entries
    if out_file is not None:
        write_split_list(out_file, converted)
    return converted


def convert_u2pl_split(src: Union[PathLike, Sequence[PathLike]],
                       dataset: str,
                       out_dir: PathLike,
                       data_root: Optional[PathLike] = None) -> Dict:
    """Convert a published labeled/unlabeled pair to mmseg ``ann_file`` lists.

    Writes ``labeled.txt`` and ``unlabeled.txt`` under ``out_dir``, in the
    published order, after checking that the pair is disjoint (and, with
    ``data_root``, that every image exists; see :func:`check_split`).

    Example:
        >>> convert_u2pl_split('u2pl-splits/cityscapes/186', 'cityscapes',
        ...                    'data/splits/cityscapes/186')

    Args:
        src (str | PathLike | Sequence): A folder holding ``labeled.txt``
            and ``unlabeled.txt``, or the two files ``(labeled, unlabeled)``.
        dataset (str): ``'voc'`` or ``'cityscapes'``.
        out_dir (str | PathLike): Output folder (created).
        data_root (str | PathLike, optional): Dataset root laid out as in
            :data:`DATASET_LAYOUTS`; when given, images (and the labels of
            labeled entries) must exist, and Cityscapes labels must hold
            train ids. Defaults to None.

    Returns:
        dict: ``labeled``/``unlabeled`` (converted entries),
        ``labeled_file``/``unlabeled_file`` (written paths),
        ``num_labeled``/``num_unlabeled``.
    """
    _check_dataset(dataset)
    if isinstance(src, (str, os.PathLike)):
        src_dir = os.fspath(src)
        if not osp.isdir(src_dir):
            raise FileNotFoundError(
                f'{src_dir!r} is not a folder; pass the folder holding '
                'labeled.txt and unlabeled.txt, or the two files')
        files = [
            osp.join(src_dir, 'labeled.txt'),
            osp.join(src_dir, 'unlabeled.txt')
        ]
    else:
        files = [os.fspath(f) for f in src]
        if len(files) != 2:
            raise ValueError('src must be a folder or the two files '
                             f'(labeled, unlabeled), got {files}')
    subset = 'train' if dataset == 'cityscapes' else None
    l_entries, u_entries = (
        _convert_entries(f, dataset, subset) for f in files)
    # Errors name the source files and their line numbers.
    layout = DATASET_LAYOUTS[dataset] if data_root is not None else {}
    check_split(
        l_entries,
        u_entries,
        data_root=data_root,
        check_trainids=dataset == 'cityscapes' and data_root is not None,
        **layout)
    labeled, unlabeled = l_entries.entries, u_entries.entries
    out_dir = os.fspath(out_dir)
    out_files = [
        osp.join(out_dir, 'labeled.txt'),
        osp.join(out_dir, 'unlabeled.txt')
    ]
    write_split_list(out_files[0], labeled)
    write_split_list(out_files[1], unlabeled)
    return dict(
        labeled=labeled,
        unlabeled=unlabeled,
        labeled_file=out_files[0],
        unlabeled_file=out_files[1],
        num_labeled=len(labeled),
        num_unlabeled=len(unlabeled))


def find_u2pl_splits(src_root: PathLike) -> Dict[str, str]:
    """Sub-folders of ``src_root`` that hold a labeled/unlabeled pair.

    Args:
        src_root (str | PathLike): E.g. ``u2pl-splits/pascal``.

    Returns:
        dict[str, str]: Folder name -> folder path, numeric names sorted by
        value first, then the others alphabetically.
    """
    src_root = os.fspath(src_root)
    if not osp.isdir(src_root):
        raise FileNotFoundError(f'split folder {src_root!r} does not exist')
    found = {}
    for name in os.listdir(src_root):
        folder = osp.join(src_root, name)
        if osp.isfile(osp.join(folder, 'labeled.txt')) and osp.isfile(
                osp.join(folder, 'unlabeled.txt')):
            found[name] = folder
    order = sorted(
        found,
        key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0, n))
    return {name: found[name] for name in order}


def published_setting(dataset: str, num_labeled: int) -> Optional[str]:
    """Name the U2PL setting a labeled count belongs to.

    Args:
        dataset (str): ``'voc'`` or ``'cityscapes'``.
        num_labeled (int): Labeled images of the split.

    Returns:
        str | None: E.g. ``'classic 1/16'``, ``'blender 1/4'``, ``'1/8'``;
        None when no published split has that many labeled images.
    """
    for setting, counts in U2PL_PUBLISHED_SPLITS[_check_dataset(
            dataset)]['settings'].items():
        if num_labeled in counts:
            share = counts[num_labeled]
            return share if setting == 'default' else f'{setting} {share}'
    return None


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert U2PL split lists to mmseg ann_file lists and '
        'check them.')
    parser.add_argument(
        '--src',
        required=True,
        help='published split folder, e.g. u2pl-splits/pascal')
    parser.add_argument(
        '--dataset', required=True, choices=['voc', 'cityscapes'])
    parser.add_argument('--out-dir', required=True, help='output folder')
    parser.add_argument(
        '--data-root',
        help='dataset root (VOC: VOCdevkit/VOC2012 with JPEGImages and '
        'SegmentationClassAug; Cityscapes: with leftImg8bit and gtFine '
        'holding *_gtFine_labelTrainIds.png); when given, every image and '
        'labeled label map must exist')
    return parser.parse_args(argv)


def check_pair(name: str, result: dict, dataset: str, fine_set: set) -> list:
    """Problems of one converted split (empty when all checks pass)."""
    problems = []
    num_labeled = result['num_labeled']
    total = num_labeled + result['num_unlabeled']
    expected_total = U2PL_PUBLISHED_SPLITS[dataset]['num_total']
    if name.isdigit() and int(name) != num_labeled:
        problems.append(f'folder {name} but {num_labeled} labeled')
    setting = published_setting(dataset, num_labeled)
    if setting is None:
        problems.append(f'{num_labeled} labeled is no published U2PL count')
    if total != expected_total:
        problems.append(f'labeled + unlabeled = {total}, expected '
                        f'{expected_total}')
    if fine_set and setting is not None and setting.startswith('classic'):
        outside = [n for n in result['labeled'] if n not in fine_set]
        if outside:
            problems.append(f'{len(outside)} classic labeled images are not '
                            f'in the fine set, e.g. {outside[0]!r}')
    return problems


def format_table(rows: list) -> str:
    header = ('split', 'setting', 'labeled', 'unlabeled', 'total', 'in fine',
              'status')
    rows = [header] + [tuple(str(v) for v in row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return '\n'.join('  '.join(v.ljust(w)
                               for v, w in zip(row, widths)).rstrip()
                     for row in rows)


def run(args: argparse.Namespace) -> bool:
    """Convert and check everything; True when every check passed."""
    splits = find_u2pl_splits(args.src)
    val_file = osp.join(args.src, 'val.txt')
    if not splits and not osp.isfile(val_file):
        raise FileNotFoundError(
            f'no <n>/labeled.txt + unlabeled.txt and no val.txt under '
            f'{args.src!r}; point --src at e.g. u2pl-splits/pascal')

    results, rows, ok = {}, [], True
    for name, folder in splits.items():
        try:
            results[name] = convert_u2pl_split(
                folder,
                args.dataset,
                osp.join(args.out_dir, name),
                data_root=args.data_root)
        except (ValueError, FileNotFoundError) as err:
            results[name] = err

    fine_set = set()
    fine = results.get(VOC_FINE_SPLIT)
    if args.dataset == 'voc' and isinstance(fine, dict):
        fine_set = set(fine['labeled'])
    train_sets = {}
    for name, result in results.items():
        if isinstance(result, Exception):
            ok = False
            rows.append((name, '-', '-', '-', '-', '-', f'ERROR: {result}'))
            continue
        problems = check_pair(name, result, args.dataset, fine_set)
        train_sets[name] = frozenset(result['labeled']) | frozenset(
            result['unlabeled'])
        in_fine = '-' if not fine_set else sum(n in fine_set
                                               for n in result['labeled'])
        rows.append(
            (name, published_setting(args.dataset, result['num_labeled'])
             or '?', result['num_labeled'], result['num_unlabeled'],
             result['num_labeled'] + result['num_unlabeled'], in_fine,
             '; '.join(problems) or 'ok'))
        ok = ok and not problems
    if rows:
        print(format_table(rows))
    if len(set(train_sets.values())) > 1:
        ok = False
        print('ERROR: the splits do not share one training set '
              '(labeled + unlabeled differs between them)')
    elif train_sets:
        print(f'all {len(train_sets)} splits are disjoint pairs over the '
              f'same {len(next(iter(train_sets.values())))} training images')

    if osp.isfile(val_file):
        ok = convert_val(args, val_file, train_sets) and ok
    print(f'converted lists written under {args.out_dir}')
    return ok


def convert_val(args: argparse.Namespace, val_file: str,
                train_sets: dict) -> bool:
    """Convert ``val.txt``; check it against the training set and files."""
    try:
        out_file = osp.join(args.out_dir, 'val.txt')
        val = convert_u2pl_list(
            val_file,
            args.dataset,
            out_file,
            subset='val' if args.dataset == 'cityscapes' else None)
        if args.data_root is not None:
            layout = DATASET_LAYOUTS[args.dataset]
            img_path = layout['img_path'].replace('train', 'val')
            check_split(
                out_file,
                data_root=args.data_root,
                img_path=img_path,
                img_suffix=layout['img_suffix'])
    except (ValueError, FileNotFoundError) as err:
        print(f'val: ERROR: {err}')
        return False
    # Cityscapes val entries are relative to leftImg8bit/val, not /train.
    train = frozenset() if args.dataset == 'cityscapes' else next(
        iter(train_sets.values()), frozenset())
    shared = [n for n in val if n in train]
    if shared:
        print(f'val: ERROR: {len(shared)} validation entries are also '
              f'training entries, e.g. {shared[0]!r}')
        return False
    print(f'val: {len(val)} entries' +
          (', disjoint from the training set' if train else ''))
    return True


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        ok = run(args)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f'error: {err}')
    if not ok:
        sys.exit('error: some checks failed, see above')


if __name__ == '__main__':
    main()
