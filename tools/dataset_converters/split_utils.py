# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Helpers shared by the split tools: list files, labeled fractions, checks.

A split is two text files in MMSegmentation's ``ann_file`` format: one entry
per line, the image path relative to the dataset's ``img_path`` prefix
without the image suffix, e.g. ``2007_000033`` (VOC),
``aachen/aachen_000000_000019`` (Cityscapes) or ``train_00000`` (the toy
datasets). The labeled share of a split (paper Sec. 4.1) is read by
:func:`parse_fraction` and turned into an image count by
:func:`num_from_fraction`, the one rounding rule of every tool. Only numpy
and Pillow are used (no torch, no ``mmseg_u2pl``). About 340 lines: the
helpers serve several tools, and :func:`check_split` is also called on
lists made elsewhere.
"""
import math
import os
import os.path as osp
import re
from fractions import Fraction
from typing import (Dict, Iterable, List, NamedTuple, Optional, Sequence,
                    Tuple, Union)

import numpy as np

PathLike = Union[str, 'os.PathLike[str]']
Share = Union[str, float, Fraction]

TRAINID_HINT = (
    'Cityscapes labels must hold train ids (0-18, 255 = ignore), not the raw '
    "label ids of '*_gtFine_labelIds.png'. Run mmseg's "
    "'python tools/dataset_converters/cityscapes.py <data_root> --nproc 8' "
    "to write '*_gtFine_labelTrainIds.png' and use "
    "seg_map_suffix='_gtFine_labelTrainIds.png'.")

_NAMED_FRACTION = re.compile(r'^\d+-\d+$')


class SplitEntries(NamedTuple):
    """Entries of a split list with their 1-based line numbers.

    Attributes:
        name (str): The list, as named in error messages.
        lines (list[tuple[int, str]]): ``(line number, entry)`` pairs.
    """
    name: str
    lines: List[Tuple[int, str]]

    @property
    def entries(self) -> List[str]:
        return [entry for _, entry in self.lines]


SplitSource = Union[PathLike, Sequence[str], SplitEntries]


# ---------------------------------------------------------------------------
# list files
# ---------------------------------------------------------------------------
def read_split_entries(path: PathLike) -> SplitEntries:
    """Non-blank, stripped lines of ``path`` with their line numbers.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If an entry appears twice (names both line numbers).
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'split list {path!r} does not exist')
    lines, first_line = [], {}
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
            lines.append((lineno, entry))
    return SplitEntries(path, lines)


def read_split_list(path: PathLike) -> List[str]:
    """Read a split list: one entry per line, blank lines skipped.

    Args:
        path (str | PathLike): The list file.

    Returns:
        list[str]: The entries, in file order.
    """
    return read_split_entries(path).entries


def validate_entries(names: Iterable[str], what: str) -> List[str]:
    """Check that ``names`` are unique and can be written one per line."""
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
    """Write ``names`` one per line with a final newline (folders created).

    Raises:
        ValueError: If an entry cannot be written or is duplicated.
    """
    path = os.fspath(path)
    names = validate_entries(names, f'writing {path!r}')
    if osp.dirname(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.writelines(f'{name}\n' for name in names)


def _as_entries(source: SplitSource, default_name: str) -> SplitEntries:
    """A split given as a file, entries with lines, or names in memory.

    Names in memory get their 1-based position as line number.
    """
    if isinstance(source, (str, os.PathLike)):
        return read_split_entries(source)
    if isinstance(source, SplitEntries):
        return source
    names = validate_entries(source, default_name)
    return SplitEntries(default_name, list(enumerate(names, start=1)))


# ---------------------------------------------------------------------------
# labeled fractions
# ---------------------------------------------------------------------------
def parse_fraction(value: Share) -> Fraction:
    """Parse a labeled share: ``'1/16'``, ``'1-16'``, ``'0.0625'``, 0.0625.

    ``'1-16'`` is the form of split file names (``labeled_1-16.txt``).

    Raises:
        ValueError: If ``value`` is not a number in ``(0, 1]``.
    """
    try:
        if isinstance(value, float):
            result = Fraction(value).limit_denominator(10**6)
        else:
            text = str(value).strip()
            if _NAMED_FRACTION.match(text):
                text = text.replace('-', '/')
            result = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f'fraction {value!r} is not a number; write it as '
                         "'1/16' or '0.0625'") from None
    if not 0 < result <= 1:
        raise ValueError(f'fraction {value!r} must be in (0, 1], e.g. 1/16')
    return result


def num_from_fraction(num_total: int, fraction: Share) -> int:
    """Labeled images for a share of ``num_total``, rounded up.

    Rounding up reproduces every split published with U2PL, e.g. 1/16 of
    10,582 is 662 and 1/2 of 2,975 is 1,488; it is never below one.
    """
    return math.ceil(parse_fraction(fraction) * num_total)


# ---------------------------------------------------------------------------
# label maps
# ---------------------------------------------------------------------------
def read_label(path: str) -> np.ndarray:
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


def invalid_values(label: np.ndarray, num_classes: int,
                   ignore_index: int) -> np.ndarray:
    """Values of ``label`` that are neither a class nor ``ignore_index``."""
    values = np.unique(label)
    return values[(values >= num_classes) & (values != ignore_index)
                  | (values < 0)]


def check_trainid_labels(paths: Iterable[PathLike],
                         num_classes: int = 19,
                         ignore_index: int = 255) -> None:
    """Check that Cityscapes label maps hold train ids.

    Raises:
        FileNotFoundError: If a file is missing.
        ValueError: If a file holds other values, e.g. the raw label ids
            (up to 33); the message says how to convert them.
    """
    for path in paths:
        path = os.fspath(path)
        bad = invalid_values(read_label(path), num_classes, ignore_index)
        if bad.size:
            raise ValueError(
                f'label map {path!r} holds values {bad.tolist()} outside '
                f'[0, {num_classes}) and the ignore index {ignore_index}. ' +
                TRAINID_HINT)


# ---------------------------------------------------------------------------
# checking a split
# ---------------------------------------------------------------------------
def _overlap_message(labeled: SplitEntries,
                     unlabeled: SplitEntries) -> Optional[str]:
    unlabeled_line = {entry: lineno for lineno, entry in unlabeled.lines}
    shared = [(lineno, entry, unlabeled_line[entry])
              for lineno, entry in labeled.lines if entry in unlabeled_line]
    if not shared:
        return None
    shown = '; '.join(f'{entry!r} ({labeled.name!r} line {l_line}, '
                      f'{unlabeled.name!r} line {u_line})'
                      for l_line, entry, u_line in shared[:5])
    more = f' and {len(shared) - 5} more' if len(shared) > 5 else ''
    return (f'labeled and unlabeled lists share {len(shared)} entries: '
            f'{shown}{more}. An image must be either labeled or unlabeled; '
            'remove these entries from one of the lists.')


def _check_files_exist(split: SplitEntries, root: str, prefix: str,
                       suffix: str, what: str) -> List[str]:
    """Paths of the entries below ``root/prefix``; raise on the first gap."""
    folder = osp.join(root, prefix) if prefix else root
    paths = [osp.join(folder, entry + suffix) for entry in split.entries]
    missing = [i for i, path in enumerate(paths) if not osp.isfile(path)]
    if missing:
        lineno, entry = split.lines[missing[0]]
        raise FileNotFoundError(
            f'split list {split.name!r}, line {lineno}: the {what} of '
            f'{entry!r} is not at {paths[missing[0]]!r} ({len(missing)} of '
            f'{len(paths)} entries are missing). Check data_root ({root!r}), '
            f'the {what} prefix ({prefix!r}) and suffix ({suffix!r}), or '
            'remove the entry from the list.')
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

    Checks, in order: no duplicates, labeled and unlabeled are disjoint, the
    expected counts, and with ``data_root`` that every image (and every
    labeled entry's label map, if ``seg_map_path`` is given) exists, and
    with ``check_trainids`` that those label maps hold Cityscapes train ids.

    Args:
        labeled (str | PathLike | Sequence[str] | SplitEntries): Labeled
            list file or entries.
        unlabeled (str | PathLike | Sequence[str] | SplitEntries, optional):
            Unlabeled list file or entries. Defaults to None.
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
        ValueError: On duplicates, overlap or a count mismatch (names the
            lists, entries and line numbers).
        FileNotFoundError: On a missing image or label map.
    """
    labeled = _as_entries(labeled, '<labeled list>')
    unlabeled = (
        SplitEntries('<no unlabeled list>', [])
        if unlabeled is None else _as_entries(unlabeled, '<unlabeled list>'))
    overlap = _overlap_message(labeled, unlabeled)
    if overlap is not None:
        raise ValueError(overlap)

    counts = dict(
        num_labeled=len(labeled.lines),
        num_unlabeled=len(unlabeled.lines),
        num_total=len(labeled.lines) + len(unlabeled.lines))
    expected = dict(
        num_labeled=num_labeled,
        num_unlabeled=num_unlabeled,
        num_total=num_total)
    for key, value in expected.items():
        if value is not None and counts[key] != value:
            raise ValueError(
                f'split ({labeled.name!r}, {unlabeled.name!r}): expected '
                f'{key}={value}, found {counts[key]}. Use the complete lists '
                'of this split.')

    if data_root is None:
        if check_trainids:
            raise ValueError('check_trainids needs data_root and seg_map_path')
        return counts
    root = os.fspath(data_root)
    if not osp.isdir(root):
        raise FileNotFoundError(f'data_root {root!r} is not a folder')
    for split in (labeled, unlabeled):
        _check_files_exist(split, root, img_path, img_suffix, 'image')
    if seg_map_path is not None:
        label_paths = _check_files_exist(labeled, root, seg_map_path,
                                         seg_map_suffix, 'label map')
        if check_trainids:
            check_trainid_labels(label_paths, num_classes=num_classes)
    return counts
