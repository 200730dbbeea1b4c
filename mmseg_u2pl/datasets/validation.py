# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Checks of a dataset's paths and files: clear errors instead of late crashes.

Generic: works with any ``BaseSegDataset`` (ToyShapes, VOC, Cityscapes, ...).
A missing ``data_root``, split file or image, and a PNG / JPEG file that is
empty, truncated or not an image at all, are reported at construction,
naming the path, the split file and its line and what to do. Samples are
checked as they load by :mod:`mmseg_u2pl.datasets.sample_checks`.

To check a stock mmseg dataset whose split file may be missing, build it with
``lazy_init=True`` (mmseg would otherwise fail inside ``full_init`` with a bare
assertion) and call :func:`check_dataset_files`, which loads the data list::

    dataset = DATASETS.build(dict(cfg, lazy_init=True))
    check_dataset_files(dataset, check_labels=True)
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

from .file_checks import ExistenceCache, image_file_problem

# How many missing files a message lists before summarising with a count.
MAX_LISTED = 5
DEFAULT_FIX_HINT = (
    'check data_root / data_prefix / ann_file in your config '
    '(relative paths are resolved from the current directory '
    '{cwd}); prepare VOC / Cityscapes as in docs/data_preparation.md, '
    'or for the toy dataset run '
    '`python tools/dataset_converters/make_toy_dataset.py --out '
    '<data_root>`')
CORRUPT_FIX_HINT = (
    'replace the listed files with intact copies (an interrupted download, '
    'copy or conversion leaves empty or truncated files: repeat that data '
    'preparation step), or remove their lines from the split file')


def _is_local(path: str) -> bool:
    """Whether ``path`` is on the local file system (not ``s3://`` etc.)."""
    return '://' not in path


def _fix(fix_hint: Optional[str]) -> str:
    hint = DEFAULT_FIX_HINT if fix_hint is None else fix_hint
    return 'Fix: ' + hint.format(cwd=os.getcwd())


def _ann_file(dataset) -> str:
    return getattr(dataset, 'ann_file', '') or ''


def _uses_split_file(dataset) -> bool:
    """mmseg reads a split list when ``ann_file`` is set and not a folder."""
    ann_file = _ann_file(dataset)
    return bool(ann_file) and not osp.isdir(ann_file)


def _sibling_files(path: str, limit: int = 12) -> str:
    """Short listing of the files next to ``path`` (to spot typos)."""
    folder = osp.dirname(path) or '.'
    if not osp.isdir(folder):
        return f'its folder {folder!r} does not exist either'
    names = sorted(os.listdir(folder))
    shown = ', '.join(names[:limit]) + (', ...' if len(names) > limit else '')
    return f'{folder!r} contains: {shown or "nothing"}'


def check_dataset_paths(dataset, fix_hint: Optional[str] = None) -> None:
    """Check the paths a dataset needs before it loads its data list.

    Checks that ``data_root`` exists (if set), that the split file
    ``ann_file`` (if set) exists and is not empty, and, without a split file,
    that the image folder exists and holds images.
    Paths of remote back-ends (``s3://...``) are not checked.

    Args:
        dataset (BaseSegDataset): The dataset, initialised or not.
        fix_hint (str, optional): What the user should do, appended to the
            message; ``{cwd}`` is replaced by the current directory. Defaults
            to a generic hint.

    Raises:
        FileNotFoundError: A path is missing.
        ValueError: The split file, or the image folder without one, is
            empty.
    """
    name = type(dataset).__name__
    data_root = getattr(dataset, 'data_root', None)
    if data_root and _is_local(data_root) and not osp.isdir(data_root):
        raise FileNotFoundError(
            f'{name}: data_root {data_root!r} does not exist (absolute path '
            f'{osp.abspath(data_root)!r}). {_fix(fix_hint)}')
    ann_file = _ann_file(dataset)
    if ann_file and _is_local(ann_file) and not osp.exists(ann_file):
        raise FileNotFoundError(
            f'{name}: split file (ann_file) {ann_file!r} does not exist; '
            f'{_sibling_files(ann_file)}. {_fix(fix_hint)}')
    if _uses_split_file(dataset):
        if _is_local(ann_file) and _is_blank(ann_file):
            raise ValueError(_empty_message(dataset, fix_hint))
        return
    img_dir = getattr(dataset, 'data_prefix', {}).get('img_path', '')
    if img_dir and _is_local(img_dir):
        if not osp.isdir(img_dir):
            raise FileNotFoundError(
                f'{name}: image folder (data_prefix.img_path) {img_dir!r} '
                f'does not exist. {_fix(fix_hint)}')
        if not _has_file_ending(img_dir, getattr(dataset, 'img_suffix', '')):
            raise ValueError(_empty_message(dataset, fix_hint))


def _is_blank(path: str) -> bool:
    """Whether a text file holds nothing but white space."""
    with open(path, 'rb') as f:
        return not f.read().strip()


def _has_file_ending(folder: str, suffix: str) -> bool:
    """Whether ``folder`` holds (recursively) a file ending in ``suffix``.

    Stops at the first match, so it is cheap on a populated folder.
    """
    for _, _, names in os.walk(folder, followlinks=True):
        if any(name.endswith(suffix) for name in names):
            return True
    return False


def _empty_message(dataset, fix_hint: Optional[str]) -> str:
    note = ''
    if _uses_split_file(dataset):
        source = f'split file {_ann_file(dataset)!r} lists no samples'
        if 'unlabeled' in osp.basename(_ann_file(dataset)):
            note = ('(The unlabeled list of a fraction of 1 is empty on '
                    'purpose: train with labels only then.) ')
    else:
        img_dir = getattr(dataset, 'data_prefix', {}).get('img_path', '')
        suffix = getattr(dataset, 'img_suffix', '')
        source = (f'no files ending in {suffix!r} were found under '
                  f'{img_dir!r}')
    return (f'{type(dataset).__name__} is empty: {source}. {note}'
            f'{_fix(fix_hint)}')


def _data_infos(dataset) -> List[dict]:
    """The data list of an initialised dataset, serialised or not."""
    if getattr(dataset, 'serialize_data', False):
        return [dataset.get_data_info(i) for i in range(len(dataset))]
    return dataset.data_list


def _split_lines(ann_file: str) -> Dict[str, int]:
    """Map each stripped line of a text split file to its first line number."""
    lines: Dict[str, int] = {}
    if not (ann_file and _is_local(ann_file) and osp.isfile(ann_file)):
        return lines
    if ann_file.endswith(('.json', '.pkl', '.pickle')):
        return lines
    try:
        with open(ann_file, encoding='utf-8', errors='replace') as f:
            for number, line in enumerate(f, 1):
                lines.setdefault(line.strip(), number)
    except OSError:
        pass
    return lines


def _line_of(path: str, prefix: str, suffix: str,
             lines: Dict[str, int]) -> Optional[int]:
    """Line of the split file that produced ``path``, if it can be found."""
    if not lines:
        return None
    rel = osp.relpath(path, prefix) if prefix else path
    candidates = [rel, osp.basename(path)]
    candidates += [
        c[:-len(suffix)] for c in list(candidates)
        if suffix and c.endswith(suffix)
    ]
    for candidate in candidates:
        if candidate in lines:
            return lines[candidate]
    return None


def _file_list_message(dataset, key: str, problems: List[Tuple[int, str, str]],
                       total: int, what: str, fix: str) -> str:
    """Name the first files of ``problems`` with their split file lines.

    Args:
        dataset (BaseSegDataset): The dataset the files belong to.
        key (str): ``'img_path'`` or ``'seg_map_path'``.
        problems (list[tuple[int, str, str]]): ``(sample index, path,
            detail)``; a non-empty detail is appended to the path.
        total (int): Number of samples of the dataset.
        what (str): What is wrong with them, e.g. ``'do not exist'``.
        fix (str): The ``Fix: ...`` sentence.
    """
    name = type(dataset).__name__
    kind = 'image' if key == 'img_path' else 'label'
    prefix_key = 'img_path' if key == 'img_path' else 'seg_map_path'
    prefix = getattr(dataset, 'data_prefix', {}).get(prefix_key, '') or ''
    suffix = getattr(dataset, 'img_suffix'
                     if key == 'img_path' else 'seg_map_suffix', '') or ''
    if _uses_split_file(dataset):
        ann_file = _ann_file(dataset)
        source = f'listed in split file {ann_file!r}'
        lines = _split_lines(ann_file)
    else:
        ann_file, source, lines = '', f'found under {prefix!r}', {}
    shown = []
    for index, path, detail in problems[:MAX_LISTED]:
        line = _line_of(path, prefix, suffix, lines)
        where = (f'line {line} of {ann_file}'
                 if line is not None else f'sample {index}')
        shown.append(f'  {path} ({where})' + (f': {detail}' if detail else ''))
    more = len(problems) - len(shown)
    tail = f'\n  ... and {more} more' if more > 0 else ''
    return (f'{name}: {len(problems)} of {total} {kind} files {source} '
            f'{what}:\n' + '\n'.join(shown) + tail + f'\n{fix}')


def check_dataset_files(dataset,
                        check_labels: bool = True,
                        fix_hint: Optional[str] = None,
                        check_integrity: bool = True) -> None:
    """Check that a dataset's split file and every file it lists exist.

    Runs :func:`check_dataset_paths`, then ``dataset.full_init()`` if the
    dataset is not initialised yet, then checks that the data list is not
    empty and that every ``img_path`` (and, with ``check_labels``, every
    ``seg_map_path`` present in the data list) exists and, with
    ``check_integrity``, is not empty or truncated
    (:func:`image_file_problem`). One directory listing per folder keeps the
    existence check fast for tens of thousands of entries; the integrity
    check reads 80 bytes per file. Remote paths (``s3://...``) are skipped.

    Args:
        dataset (BaseSegDataset): Any mmseg dataset.
        check_labels (bool): Also check the label maps. Defaults to True.
        fix_hint (str, optional): What the user should do, appended to the
            message; ``{cwd}`` is replaced by the current directory. Defaults
            to a generic hint.
        check_integrity (bool): Also check that PNG / JPEG files are
            complete. Defaults to True.

    Raises:
        FileNotFoundError: ``data_root``, the split file or listed files are
            missing; the first few missing files are named with the split
            file line that lists them, and the total count is given.
        ValueError: The data list is empty, or (``check_integrity``) listed
            files are empty, truncated or not images, named in the same way
            with what is wrong.
    """
    check_dataset_paths(dataset, fix_hint)
    if not getattr(dataset, '_fully_initialized', True):
        dataset.full_init()
    total = len(dataset)
    if total == 0:
        raise ValueError(
            f'{type(dataset).__name__} has no samples after loading its '
            'data list (filter_cfg or indices may have removed them all). '
            f'{_fix(fix_hint)}')

    keys = ['img_path'] + (['seg_map_path'] if check_labels else [])
    cache = ExistenceCache()
    infos = _data_infos(dataset)
    for key in keys:
        paths = [(index, info[key]) for index, info in enumerate(infos)
                 if isinstance(info.get(key), str) and _is_local(info[key])]
        missing = [(index, path, '') for index, path in paths
                   if not cache.exists(path)]
        if missing:
            raise FileNotFoundError(
                _file_list_message(dataset, key, missing, total,
                                   'do not exist', _fix(fix_hint)))
        if not check_integrity:
            continue
        broken = [(index, path, problem) for index, path in paths
                  for problem in [image_file_problem(path)] if problem]
        if broken:
            raise ValueError(
                _file_list_message(dataset, key, broken, total, 'are damaged',
                                   'Fix: ' + CORRUPT_FIX_HINT))
