# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Writing an embedded dataset (ToyShapes, ToyShapes21) to disk.

A :class:`DatasetSpec` says how one image is drawn; :func:`generate_dataset`
writes the images, labels and split lists in mmseg's layout::

    <out_dir>/images/train_00000.png      RGB uint8
    <out_dir>/labels/train_00000.png      uint8 class index per pixel ('L')
    <out_dir>/splits/train.txt            all training names, sorted
    <out_dir>/splits/val.txt
    <out_dir>/splits/labeled_1-16.txt     one pair per fraction
    <out_dir>/splits/unlabeled_1-16.txt
    <out_dir>/meta.json                   version, arguments, classes, counts

Each image is seeded from ``(seed, split, index)``, so the output does not
depend on generation order and the same arguments give byte-identical files.
The labeled sets are nested and each shows every object class.
"""
import json
import os
import os.path as osp
import re
import time
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from toy_splits import (expected_split_counts, fraction_texts,
                        make_split_lists, parse_fractions)

#: Streams of the seed sequence ``(seed, stream, index)`` of each image.
SPLIT_STREAMS = {'train': 0, 'val': 1}

_OWN_IMAGE = re.compile(r'^(train|val)_\d+\.png$')
_OWN_SPLIT = re.compile(r'^(train|val|(un)?labeled_[\w.\-]+)\.txt$')


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------
def sample_names(split: str, num: int) -> List[str]:
    """File stems of a split: ``train_00000``, ``train_00001``, ..."""
    width = max(5, len(str(num - 1)))
    return [f'{split}_{i:0{width}d}' for i in range(num)]


def _expected_files(out_dir: str, meta: dict) -> List[str]:
    args = meta['arguments']
    files = [osp.join(out_dir, 'meta.json')]
    for split in SPLIT_STREAMS:
        for name in sample_names(split, args[f'num_{split}']):
            files.append(osp.join(out_dir, 'images', name + '.png'))
            files.append(osp.join(out_dir, 'labels', name + '.png'))
    for list_name in meta['split_counts']:
        files.append(osp.join(out_dir, 'splits', list_name + '.txt'))
    return files


def _write_samples(spec: 'DatasetSpec', out_dir: str, split: str,
                   names: Sequence[str], seed: int,
                   img_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Render and save the images and labels of one split.

    Returns:
        tuple[np.ndarray, np.ndarray]: Which object classes each image shows
        ``(N, num_classes - 1)`` and the pixel count of each class.
    """
    num_classes = len(spec.classes)
    presence = np.zeros((len(names), num_classes - 1), dtype=bool)
    pixel_counts = np.zeros(num_classes, dtype=np.int64)
    for index, name in enumerate(names):
        rng = np.random.default_rng([seed, SPLIT_STREAMS[split], index])
        image, label = spec.render(rng, img_size)
        Image.fromarray(image).save(osp.join(out_dir, 'images', name + '.png'))
        Image.fromarray(label).save(osp.join(out_dir, 'labels', name + '.png'))
        counts = np.bincount(label.ravel(), minlength=num_classes)
        pixel_counts += counts
        presence[index] = counts[1:] > 0
    return presence, pixel_counts


def _write_list(path: str, names: Sequence[str]) -> None:
    with open(path, 'w', newline='\n') as f:
        f.write(''.join(name + '\n' for name in names))


def _remove_own_files(out_dir: str) -> None:
    """Delete only files this generator writes (others are left alone)."""
    for sub, pattern in (('images', _OWN_IMAGE), ('labels', _OWN_IMAGE),
                         ('splits', _OWN_SPLIT)):
        folder = osp.join(out_dir, sub)
        if osp.isdir(folder):
            for name in os.listdir(folder):
                if pattern.match(name):
                    os.remove(osp.join(folder, name))
    if osp.exists(osp.join(out_dir, 'meta.json')):
        os.remove(osp.join(out_dir, 'meta.json'))


def _read_meta(out_dir: str) -> Optional[dict]:
    path = osp.join(out_dir, 'meta.json')
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _describe_difference(old_meta: dict, arguments: dict, version: str) -> str:
    """``'num_train 48 (on disk) vs 40 (requested), ...'``."""
    old_args = old_meta.get('arguments') or {}
    diffs = [
        f'{key} {old_args.get(key)!r} (on disk) vs {value!r} (requested)'
        for key, value in arguments.items() if old_args.get(key) != value
    ]
    if old_meta.get('generator_version') != version:
        diffs.append(f"generator version {old_meta.get('generator_version')!r}"
                     f' (on disk) vs {version!r} (this code)')
    return ', '.join(diffs)


def _check_arguments(num_train: int, num_val: int, img_size: int,
                     seed: int) -> None:
    for name, value, low in (('num_train', num_train, 1),
                             ('num_val', num_val, 1), ('img_size', img_size,
                                                       16), ('seed', seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f'{name} must be an int, got {value!r}')
        if value < low:
            raise ValueError(f'{name} must be >= {low}, got {value}')


def _summary(out_dir: str, meta: dict, reused: bool, seconds: float) -> dict:
    return dict(
        out_dir=out_dir,
        reused=reused,
        time_s=round(seconds, 3),
        classes=list(meta['classes']),
        split_counts=dict(meta['split_counts']),
        class_pixel_freq_train=dict(meta['class_pixel_freq_train']),
        arguments=dict(meta['arguments']))


class DatasetSpec(NamedTuple):
    """What distinguishes one embedded dataset from another.

    Attributes:
        generator (str): Name of the dataset's generator, written to
            ``meta.json``; a dataset on disk is only reused by the same
            generator.
        version (str): Version of its drawing; a dataset on disk from
            another version is regenerated, never reused.
        classes (tuple[str, ...]): Class names, background first.
        palette (list[list[int]]): One RGB colour per class.
        render (Callable): ``render(rng, img_size) -> (image, label)``.
    """
    generator: str
    version: str
    classes: Tuple[str, ...]
    palette: List[List[int]]
    render: Callable[[np.random.Generator, int], Tuple[np.ndarray, np.ndarray]]


def generate_dataset(spec: DatasetSpec,
                     out_dir: str,
                     num_train: int,
                     num_val: int,
                     img_size: int,
                     seed: int,
                     fractions: Sequence[str],
                     overwrite: bool = False) -> dict:
    """Write the embedded dataset ``spec`` to ``out_dir``.

    Re-running with the same arguments on a complete dataset returns at once
    without rewriting anything.

    Args:
        spec (DatasetSpec): The dataset.
        out_dir (str): Dataset root (becomes the config's ``data_root``).
        num_train (int): Training images.
        num_val (int): Validation images.
        img_size (int): Side of the square images.
        seed (int): Seed of everything.
        fractions (Sequence[str]): Labeled fractions of the training set; one
            ``labeled_<f>.txt`` / ``unlabeled_<f>.txt`` pair is written per
            fraction, ``/`` becoming ``-`` in the name.
        overwrite (bool): Replace a dataset generated with other arguments.
            Defaults to False.

    Returns:
        dict: Summary with ``out_dir``, ``reused`` (nothing was written),
        ``time_s``, ``classes``, ``split_counts`` (lines per split file),
        ``class_pixel_freq_train`` (share of training pixels per class) and
        ``arguments``.
    """
    start = time.perf_counter()
    _check_arguments(num_train, num_val, img_size, seed)
    texts = fraction_texts(fractions)
    parse_fractions(texts)
    arguments = dict(
        num_train=int(num_train),
        num_val=int(num_val),
        img_size=int(img_size),
        seed=int(seed),
        fractions=texts)

    old_meta = _read_meta(out_dir)
    if old_meta is not None and (old_meta.get('generator') == spec.generator
                                 and old_meta.get('generator_version')
                                 == spec.version
                                 and old_meta.get('arguments') == arguments):
        complete = all(
            osp.isfile(f) for f in _expected_files(out_dir, old_meta))
        counts = expected_split_counts(arguments)
        if complete and old_meta.get('split_counts') == counts:
            return _summary(out_dir, old_meta, True,
                            time.perf_counter() - start)
        # Same arguments but incomplete (or other labeled counts):
        # regenerating is harmless.
    elif osp.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        if old_meta is None:
            what = 'is not empty and has no readable meta.json'
        elif old_meta.get('generator') != spec.generator:
            what = (f"holds a dataset of {old_meta.get('generator')!r}, not "
                    f'of {spec.generator!r}')
        else:
            what = ('holds a toy dataset generated with other arguments: ' +
                    _describe_difference(old_meta, arguments, spec.version))
        raise FileExistsError(
            f'Output directory {out_dir!r} {what}. Pass --overwrite '
            '(overwrite=True) to replace it, or choose another --out.')
    _remove_own_files(out_dir)

    for sub in ('images', 'labels', 'splits'):
        os.makedirs(osp.join(out_dir, sub), exist_ok=True)
    names, presence, pixel_counts = {}, None, None
    for split, num in (('train', num_train), ('val', num_val)):
        names[split] = sample_names(split, num)
        split_presence, split_counts = _write_samples(spec, out_dir, split,
                                                      names[split], seed,
                                                      img_size)
        if split == 'train':
            presence, pixel_counts = split_presence, split_counts

    lists = {split: list(range(len(names[split]))) for split in names}
    lists.update(
        make_split_lists(presence, arguments['fractions'], seed, spec.classes))
    split_counts = {}
    for list_name, indices in lists.items():
        split = 'val' if list_name == 'val' else 'train'
        _write_list(
            osp.join(out_dir, 'splits', list_name + '.txt'),
            [names[split][i] for i in indices])
        split_counts[list_name] = len(indices)

    freq = pixel_counts / max(1, pixel_counts.sum())
    meta = dict(
        generator=spec.generator,
        generator_version=spec.version,
        arguments=arguments,
        classes=list(spec.classes),
        palette=spec.palette,
        split_counts=split_counts,
        class_pixel_freq_train={
            name: round(float(f), 6)
            for name, f in zip(spec.classes, freq)
        })
    # meta.json last: its presence marks a complete dataset.
    tmp_path = osp.join(out_dir, 'meta.json.tmp')
    with open(tmp_path, 'w', newline='\n') as f:
        json.dump(meta, f, indent=2)
        f.write('\n')
    os.replace(tmp_path, osp.join(out_dir, 'meta.json'))
    return _summary(out_dir, meta, False, time.perf_counter() - start)
