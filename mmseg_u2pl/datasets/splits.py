# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Labeled/unlabeled split lists (paper Sec. 4.1).

A split is two text files in MMSegmentation's ``ann_file`` format: one entry
per line, the image path relative to the dataset's ``img_path`` prefix
without the image suffix, e.g.

- VOC (``img_path='JPEGImages'``, ``img_suffix='.jpg'``): ``2007_000033``;
- Cityscapes (``img_path='leftImg8bit/train'``,
  ``img_suffix='_leftImg8bit.png'``): ``aachen/aachen_000000_000019``;
- the toy dataset: ``train_00000``.

This module reads, writes and checks such lists, converts the lists
published with U2PL to this format and draws new seeded splits. It depends
on numpy and Pillow only, so the tools that use it need no accelerator.
"""
import hashlib
import math
import os
import os.path as osp
import re
from fractions import Fraction
from typing import (Dict, Iterable, List, Mapping, Optional, Sequence, Tuple,
                    Union)

import numpy as np

PathLike = Union[str, 'os.PathLike[str]']
SplitSource = Union[PathLike, Sequence[str]]
LabelPaths = Union[Sequence[PathLike], Mapping[str, PathLike]]

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

_TRAINID_HINT = (
    'Cityscapes labels must hold train ids (0-18, 255 = ignore), not the raw '
    "label ids of '*_gtFine_labelIds.png'. Run mmseg's "
    "'python tools/dataset_converters/cityscapes.py <data_root> --nproc 8' "
    "to write '*_gtFine_labelTrainIds.png' and use "
    "seg_map_suffix='_gtFine_labelTrainIds.png'.")


# ---------------------------------------------------------------------------
# Reading and writing lists
# ---------------------------------------------------------------------------
def _read_entries(path: PathLike) -> List[Tuple[int, str]]:
    """Non-blank, stripped lines of ``path`` with 1-based line numbers.

    Duplicates are rejected (see :func:`read_split_list`).
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'split list {path!r} does not exist')
    entries = []
    first_line: Dict[str, int] = {}
    # utf-8-sig drops a byte-order mark; universal newlines handle CRLF.
    with open(path, encoding='utf-8-sig') as f:
        for lineno, line in enumerate(f, start=1):
            entry = line.strip()
            if not entry:
                continue
            if entry in first_line:
                raise ValueError(
                    f'split list {path!r}: entry {entry!r} appears twice, on '
                    f'line {first_line[entry]} and line {lineno}; remove one '
                    'of them (an image must be listed once).')
            first_line[entry] = lineno
            entries.append((lineno, entry))
    return entries


def read_split_list(path: PathLike) -> List[str]:
    """Read a split list: one entry per line.

    Whitespace around entries is stripped, blank lines are skipped and a
    missing final newline is fine.

    Args:
        path (str | PathLike): The list file.

    Returns:
        list[str]: The entries, in file order.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If an entry appears twice (names the file, the entry and
            both line numbers).
    """
    return [entry for _, entry in _read_entries(path)]


def _validate_entries(names: Iterable[str], what: str) -> List[str]:
    """Check that ``names`` can be written one per line and read back."""
    names = list(names)
    seen: Dict[str, int] = {}
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name or name != name.strip() \
                or '\n' in name or '\r' in name:
            raise ValueError(
                f'{what}: entry #{index} {name!r} is not a non-empty string '
                'without surrounding whitespace or line breaks.')
        if name in seen:
            raise ValueError(f'{what}: entry {name!r} is listed twice (#'
                             f'{seen[name]} and #{index}).')
        seen[name] = index
    return names


def write_split_list(path: PathLike, names: Iterable[str]) -> None:
    """Write ``names`` one per line, with a final newline.

    Parent directories are created.

    Args:
        path (str | PathLike): The list file to (over)write.
        names (Iterable[str]): Entries; must be unique, non-empty and free of
            surrounding whitespace and line breaks.

    Raises:
        ValueError: If an entry cannot be written or is duplicated.
    """
    path = os.fspath(path)
    names = _validate_entries(names, f'writing {path!r}')
    parent = osp.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.writelines(f'{name}\n' for name in names)


def _as_entries(source: SplitSource,
                default_name: str) -> Tuple[str, List[Tuple[int, str]]]:
    """A split given as a file or as names -> (display name, entries).

    Names given in memory get their 1-based position as "line number".
    """
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source), _read_entries(source)
    names = _validate_entries(source, default_name)
    return default_name, list(enumerate(names, start=1))


# ---------------------------------------------------------------------------
# Converting the published U2PL lists
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
                     subset: Optional[str]) -> List[Tuple[int, str]]:
    """Converted entries of a U2PL list with their source line numbers."""
    converted = []
    first_line: Dict[str, int] = {}
    for lineno, line in _read_entries(src):
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
    return converted


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
    converted = [
        entry
        for _, entry in _convert_entries(os.fspath(src), dataset, subset)
    ]
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
    _check_entries(
        files[0],
        l_entries,
        files[1],
        u_entries,
        data_root=data_root,
        check_trainids=dataset == 'cityscapes' and data_root is not None,
        **layout)
    labeled = [entry for _, entry in l_entries]
    unlabeled = [entry for _, entry in u_entries]
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
# Checking splits
# ---------------------------------------------------------------------------
def _read_label(path: str) -> np.ndarray:
    """A label map as a 2-D integer array of class indices."""
    from PIL import Image
    if not osp.isfile(path):
        raise FileNotFoundError(f'label map {path!r} does not exist')
    with Image.open(path) as img:
        label = np.asarray(img)
    if label.ndim != 2:
        raise ValueError(
            f'label map {path!r} has shape {label.shape}: expected a '
            'single-channel map of class indices (not a colour image)')
    return label


def _invalid_values(label: np.ndarray, num_classes: int,
                    ignore_index: int) -> np.ndarray:
    values = np.unique(label)
    return values[(values >= num_classes) & (values != ignore_index)
                  | (values < 0)]


def check_trainid_labels(paths: Iterable[PathLike],
                         num_classes: int = 19,
                         ignore_index: int = 255) -> None:
    """Check that Cityscapes label maps hold train ids.

    Args:
        paths (Iterable[str | PathLike]): Label maps.
        num_classes (int): Valid ids are ``[0, num_classes)``. Defaults to 19.
        ignore_index (int): Also valid. Defaults to 255.

    Raises:
        FileNotFoundError: If a file is missing.
        ValueError: If a file holds other values, e.g. the raw label ids
            (up to 33); the message says how to convert them.
    """
    for path in paths:
        path = os.fspath(path)
        bad = _invalid_values(_read_label(path), num_classes, ignore_index)
        if bad.size:
            raise ValueError(
                f'label map {path!r} holds values {bad.tolist()} outside '
                f'[0, {num_classes}) and the ignore index {ignore_index}. ' +
                _TRAINID_HINT)


def _first_overlap_message(labeled_name: str, labeled: List[Tuple[int, str]],
                           unlabeled_name: str,
                           unlabeled: List[Tuple[int, str]]) -> Optional[str]:
    unlabeled_line = {entry: lineno for lineno, entry in unlabeled}
    shared = [(lineno, entry, unlabeled_line[entry])
              for lineno, entry in labeled if entry in unlabeled_line]
    if not shared:
        return None
    shown = '; '.join(f'{entry!r} ({labeled_name!r} line {l_line}, '
                      f'{unlabeled_name!r} line {u_line})'
                      for l_line, entry, u_line in shared[:5])
    more = f' and {len(shared) - 5} more' if len(shared) > 5 else ''
    return (f'labeled and unlabeled lists share {len(shared)} entries: '
            f'{shown}{more}. An image must be either labeled or unlabeled; '
            'remove these entries from one of the lists.')


def _check_files_exist(name: str, entries: List[Tuple[int, str]], root: str,
                       prefix: str, suffix: str, what: str) -> List[str]:
    """Paths of ``entries`` below ``root/prefix``; raise on the first gap."""
    folder = osp.join(root, prefix) if prefix else root
    paths = [osp.join(folder, entry + suffix) for _, entry in entries]
    missing = [i for i, path in enumerate(paths) if not osp.isfile(path)]
    if missing:
        lineno, entry = entries[missing[0]]
        raise FileNotFoundError(
            f'split list {name!r}, line {lineno}: the {what} of {entry!r} '
            f'is not at {paths[missing[0]]!r} ({len(missing)} of '
            f'{len(entries)} entries are missing). Check data_root '
            f'({root!r}), the {what} prefix ({prefix!r}) and suffix '
            f'({suffix!r}), or remove the entry from the list.')
    return paths


def check_split(labeled: SplitSource,
                unlabeled: Optional[SplitSource] = None,
                num_labeled: Optional[int] = None,
                num_unlabeled: Optional[int] = None,
                num_total: Optional[int] = None,
                data_root: Optional[PathLike] = None,
                img_path: str = '',
                img_suffix: str = '.jpg',
                seg_map_path: Optional[str] = None,
                seg_map_suffix: str = '.png',
                check_trainids: bool = False,
                num_classes: int = 19) -> Dict[str, int]:
    """Check a labeled/unlabeled split.

    Checks, in order: no duplicates, labeled and unlabeled are disjoint,
    the expected counts, and with ``data_root`` that every image (and every
    labeled entry's label map, if ``seg_map_path`` is given) exists, and
    optionally that those label maps hold Cityscapes train ids.

    Example:
        >>> check_split('data/splits/cityscapes/186/labeled.txt',
        ...             'data/splits/cityscapes/186/unlabeled.txt',
        ...             num_labeled=186, num_total=2975,
        ...             data_root='data/cityscapes',
        ...             img_path='leftImg8bit/train',
        ...             img_suffix='_leftImg8bit.png',
        ...             seg_map_path='gtFine/train',
        ...             seg_map_suffix='_gtFine_labelTrainIds.png',
        ...             check_trainids=True)

    Args:
        labeled (str | PathLike | Sequence[str]): Labeled list file or
            entries.
        unlabeled (str | PathLike | Sequence[str], optional): Unlabeled list
            file or entries. Defaults to None (labeled checks only).
        num_labeled (int, optional): Expected labeled count.
        num_unlabeled (int, optional): Expected unlabeled count.
        num_total (int, optional): Expected labeled + unlabeled count.
        data_root (str | PathLike, optional): Dataset root; enables the
            existence checks. Defaults to None.
        img_path (str): Image prefix below ``data_root``. Defaults to ''.
        img_suffix (str): Image suffix. Defaults to '.jpg'.
        seg_map_path (str, optional): Label prefix below ``data_root``;
            None skips the label checks. Defaults to None.
        seg_map_suffix (str): Label suffix. Defaults to '.png'.
        check_trainids (bool): Check labeled label maps with
            :func:`check_trainid_labels`. Defaults to False.
        num_classes (int): For ``check_trainids``. Defaults to 19.

    Returns:
        dict[str, int]: ``num_labeled``, ``num_unlabeled``, ``num_total``.

    Raises:
        ValueError: On duplicates, overlap (names the first shared entries
            and their line numbers in both lists) or a count mismatch.
        FileNotFoundError: On a missing image or label (names the list, the
            line and the expected path).
    """
    l_name, l_entries = _as_entries(labeled, '<labeled list>')
    if unlabeled is None:
        u_name, u_entries = '<no unlabeled list>', []
    else:
        u_name, u_entries = _as_entries(unlabeled, '<unlabeled list>')
    return _check_entries(
        l_name,
        l_entries,
        u_name,
        u_entries,
        num_labeled=num_labeled,
        num_unlabeled=num_unlabeled,
        num_total=num_total,
        data_root=data_root,
        img_path=img_path,
        img_suffix=img_suffix,
        seg_map_path=seg_map_path,
        seg_map_suffix=seg_map_suffix,
        check_trainids=check_trainids,
        num_classes=num_classes)


def _check_entries(l_name: str,
                   l_entries: List[Tuple[int, str]],
                   u_name: str,
                   u_entries: List[Tuple[int, str]],
                   num_labeled: Optional[int] = None,
                   num_unlabeled: Optional[int] = None,
                   num_total: Optional[int] = None,
                   data_root: Optional[PathLike] = None,
                   img_path: str = '',
                   img_suffix: str = '.jpg',
                   seg_map_path: Optional[str] = None,
                   seg_map_suffix: str = '.png',
                   check_trainids: bool = False,
                   num_classes: int = 19) -> Dict[str, int]:
    """:func:`check_split` on entries with line numbers."""
    overlap = _first_overlap_message(l_name, l_entries, u_name, u_entries)
    if overlap is not None:
        raise ValueError(overlap)

    counts = dict(
        num_labeled=len(l_entries),
        num_unlabeled=len(u_entries),
        num_total=len(l_entries) + len(u_entries))
    expected = dict(
        num_labeled=num_labeled,
        num_unlabeled=num_unlabeled,
        num_total=num_total)
    for key, value in expected.items():
        if value is not None and counts[key] != value:
            raise ValueError(
                f'split ({l_name!r}, {u_name!r}): expected {key}={value}, '
                f'found {counts[key]}. Use the complete lists of this split.')

    if data_root is not None:
        root = os.fspath(data_root)
        if not osp.isdir(root):
            raise FileNotFoundError(f'data_root {root!r} is not a folder')
        for name, entries in ((l_name, l_entries), (u_name, u_entries)):
            _check_files_exist(name, entries, root, img_path, img_suffix,
                               'image')
        if seg_map_path is not None:
            label_paths = _check_files_exist(l_name, l_entries, root,
                                             seg_map_path, seg_map_suffix,
                                             'label map')
            if check_trainids:
                check_trainid_labels(label_paths, num_classes=num_classes)
    elif check_trainids:
        raise ValueError('check_trainids needs data_root and seg_map_path')
    return counts


# ---------------------------------------------------------------------------
# Drawing seeded splits
# ---------------------------------------------------------------------------
def parse_fraction(value: Union[str, float, Fraction]) -> Fraction:
    """Parse a labeled share such as ``'1/16'``, ``'0.0625'`` or ``0.0625``.

    Args:
        value (str | float | Fraction): The share.

    Returns:
        Fraction: A value in ``(0, 1]``.

    Raises:
        ValueError: If ``value`` is not a number in ``(0, 1]``.
    """
    try:
        if isinstance(value, float):
            result = Fraction(value).limit_denominator(10**6)
        else:
            result = Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(f'fraction {value!r} is not a number; write it as '
                         "'1/16' or '0.0625'") from None
    if not 0 < result <= 1:
        raise ValueError(f'fraction {value!r} must be in (0, 1], e.g. 1/16')
    return result


def num_from_fraction(num_total: int, fraction: Union[str, float,
                                                      Fraction]) -> int:
    """Labeled count for a share of ``num_total`` images, rounded up.

    Rounding up reproduces every published U2PL count, e.g. 1/16 of 10,582
    is 662 and 1/2 of 2,975 is 1,488.

    Args:
        num_total (int): Images in the pool.
        fraction (str | float | Fraction): See :func:`parse_fraction`.

    Returns:
        int: ``ceil(fraction * num_total)``.
    """
    return math.ceil(parse_fraction(fraction) * num_total)


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
        values = np.unique(_read_label(path))
        bad = _invalid_values(values, num_classes, ignore_index)
        if bad.size:
            raise ValueError(
                f'label map {path!r} holds values {bad.tolist()} outside '
                f'[0, {num_classes}) and the ignore index {ignore_index}; '
                'check num_classes. ' + _TRAINID_HINT)
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
               fraction: Optional[Union[str, float, Fraction]] = None,
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
    names = _validate_entries(names, 'make_split names')
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
