# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Convert the split lists published with U2PL to mmseg ``ann_file`` lists.

Every ``<src>/<n>/labeled.txt`` + ``unlabeled.txt`` becomes
``<out-dir>/<n>/labeled.txt`` + ``unlabeled.txt`` (published order kept) and
``<src>/val.txt`` becomes ``<out-dir>/val.txt``. Each pair is checked:
disjoint, ``n`` labeled images, a published U2PL count, labeled + unlabeled
= the training set (10,582 VOC / 2,975 Cityscapes), the same training set
for every split, and for VOC classic splits, labeled images from the 1,464
finely annotated ones (when the ``1464`` split is present). A table is
printed; the exit status is 1 if any check failed.

Examples:
    python tools/misc/convert_u2pl_splits.py --src u2pl-splits/pascal \
        --dataset voc --out-dir data/splits/voc
    python tools/misc/convert_u2pl_splits.py --src u2pl-splits/cityscapes \
        --dataset cityscapes --out-dir data/splits/cityscapes \
        --data-root data/cityscapes
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0,
                osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmseg_u2pl.datasets.splits import (  # noqa: E402
    DATASET_LAYOUTS, U2PL_PUBLISHED_SPLITS, check_split, convert_u2pl_list,
    convert_u2pl_split, find_u2pl_splits, published_setting)

#: The VOC split whose labeled list is the 1,464 finely annotated images.
VOC_FINE_SPLIT = '1464'


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
