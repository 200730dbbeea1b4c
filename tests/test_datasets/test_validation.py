# Copyright (c) mmseg_u2pl contributors. All rights reserved.
import io
import os
import os.path as osp
import re
import time

import numpy as np
import pytest
from mmseg.datasets import BaseSegDataset
from PIL import Image

from mmseg_u2pl.datasets.file_checks import image_file_problem
from mmseg_u2pl.datasets.validation import (check_dataset_files,
                                            check_dataset_paths)


def make_root(tmp_path, names=('a', 'b', 'c'), labels=True):
    """A minimal mmseg layout: images/, labels/ and splits/train.txt."""
    root = tmp_path / 'data'
    for sub in ('images', 'labels', 'splits'):
        (root / sub).mkdir(parents=True)
    for name in names:
        Image.fromarray(np.zeros(
            (4, 4, 3), np.uint8)).save(root / 'images' / f'{name}.png')
        if labels:
            Image.fromarray(np.zeros(
                (4, 4), np.uint8)).save(root / 'labels' / f'{name}.png')
    (root / 'splits' / 'train.txt').write_text(''.join(n + '\n'
                                                       for n in names))
    return str(root)


def stock_dataset(root, ann_file='splits/train.txt', **kwargs):
    """A stock mmseg dataset, built lazily as the docs recommend."""
    cfg = dict(
        data_root=root,
        ann_file=ann_file,
        img_suffix='.png',
        data_prefix=dict(img_path='images', seg_map_path='labels'),
        lazy_init=True)
    cfg.update(kwargs)
    return BaseSegDataset(**cfg)


def test_valid_dataset_passes_and_is_initialised(tmp_path):
    dataset = stock_dataset(make_root(tmp_path))
    check_dataset_files(dataset)
    assert dataset._fully_initialized and len(dataset) == 3


def test_missing_data_root(tmp_path):
    dataset = stock_dataset(str(tmp_path / 'absent'))
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_files(dataset)
    message = str(info.value)
    assert 'data_root' in message and str(tmp_path / 'absent') in message
    assert 'make_toy_dataset.py' in message and os.getcwd() in message


def test_missing_split_file_lists_neighbours(tmp_path):
    root = make_root(tmp_path)
    dataset = stock_dataset(root, ann_file='splits/trian.txt')
    with pytest.raises(
            FileNotFoundError,
            match=r"split file.*splits/trian.txt.*train\.txt"):
        check_dataset_paths(dataset)


def test_missing_image_names_path_split_file_and_line(tmp_path):
    root = make_root(tmp_path)
    split = osp.join(root, 'splits', 'train.txt')
    with open(split, 'w') as f:
        f.write('a\nb\nghost_7\nc\n')
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_files(stock_dataset(root))
    message = str(info.value)
    assert re.search(r'1 of 4 image files listed in split file', message)
    image = osp.join(root, 'images', 'ghost_7.png')
    assert f'{image} (line 3 of {split})' in message
    assert 'Fix:' in message


def test_missing_labels_only_when_checked(tmp_path):
    root = make_root(tmp_path)
    os.remove(osp.join(root, 'labels', 'b.png'))
    with pytest.raises(
            FileNotFoundError,
            match=r'(?s)1 of 3 label files.*labels/b.png \(line 2'):
        check_dataset_files(stock_dataset(root))
    check_dataset_files(stock_dataset(root), check_labels=False)
    # an unlabeled form has no seg_map_path at all
    check_dataset_files(
        stock_dataset(root, data_prefix=dict(img_path='images')))


def test_many_missing_files_are_counted_and_fast(tmp_path):
    root = make_root(tmp_path)
    names = [f'img_{i:05d}' for i in range(10000)]
    with open(osp.join(root, 'splits', 'big.txt'), 'w') as f:
        f.write('\n'.join(names) + '\n')
    dataset = stock_dataset(root, ann_file='splits/big.txt')
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        check_dataset_files(dataset)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert '10000 of 10000 image files' in message
    assert '... and 9995 more' in message
    assert 'img_00004.png (line 5 of' in message
    assert 'img_00005.png' not in message
    assert elapsed < 10, f'took {elapsed:.1f} s'


def test_empty_split_and_folder_scan(tmp_path):
    root = make_root(tmp_path)
    open(osp.join(root, 'splits', 'empty.txt'), 'w').close()
    with pytest.raises(ValueError, match=r'empty.*splits/empty.txt'):
        check_dataset_files(stock_dataset(root, ann_file='splits/empty.txt'))
    # without a split file mmseg scans the image folder
    check_dataset_files(stock_dataset(root, ann_file=''))
    dataset = stock_dataset(
        root, ann_file='', data_prefix=dict(img_path='pictures'))
    with pytest.raises(FileNotFoundError, match=r'image folder.*pictures'):
        check_dataset_files(dataset)


def test_non_serialized_dataset(tmp_path):
    root = make_root(tmp_path)
    os.remove(osp.join(root, 'images', 'c.png'))
    dataset = stock_dataset(root, serialize_data=False)
    with pytest.raises(FileNotFoundError, match=r'images/c.png \(line 3'):
        check_dataset_files(dataset)


# ---------------------------------------------------------------------------
# damaged files
# ---------------------------------------------------------------------------
def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, 'PNG')
    return buffer.getvalue()


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, 'JPEG')
    return buffer.getvalue()


@pytest.mark.parametrize(
    'name, content, problem',
    [
        ('ok.png', _png_bytes(), None),
        ('ok.jpg', _jpeg_bytes(), None),
        # a JPEG under a .png name decodes fine: judged by content
        ('jpeg_named.png', _jpeg_bytes(), None),
        ('padded.jpg', _jpeg_bytes() + b'\0' * 40, None),
        ('empty.png', b'', r'is empty \(0 bytes\)'),
        ('cut.png', _png_bytes()[:-12],
         r'is truncated: this PNG file of \d+ bytes lacks its final IEND '
         'chunk'),
        ('cut.jpg', _jpeg_bytes()[:-2],
         r'is truncated: this JPEG file of \d+ bytes lacks its final EOI '
         'marker FF D9'),
        ('html.jpg', b'<!DOCTYPE html>',
         r"is not a JPEG image: it starts with b'<!DOCTYP' instead of the "
         'PNG or JPEG signature'),
        ('other.bmp', b'BM whatever', None),  # only emptiness is checked
    ])
def test_image_file_problem(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    found = image_file_problem(str(path))
    if problem is None:
        assert found is None
    else:
        assert re.fullmatch(problem, found), found
    assert image_file_problem(str(
        tmp_path / 'absent.png')).startswith('cannot be read (No such file')


def test_damaged_files_are_named_with_split_lines(tmp_path):
    root = make_root(tmp_path, names=('a', 'b', 'c', 'd'))
    image_b = osp.join(root, 'images', 'b.png')
    with open(image_b, 'r+b') as f:
        f.truncate(30)
    open(osp.join(root, 'images', 'd.png'), 'w').close()
    split = osp.join(root, 'splits', 'train.txt')
    with pytest.raises(ValueError) as info:
        check_dataset_files(stock_dataset(root))
    message = str(info.value)
    assert f"2 of 4 image files listed in split file '{split}' are " \
        'damaged:' in message
    assert (f'{image_b} (line 2 of {split}): is truncated: this PNG file '
            'of 30 bytes lacks its final IEND chunk') in message
    assert f'd.png (line 4 of {split}): is empty (0 bytes)' in message
    assert 'Fix: replace the listed files with intact copies' in message
    # the check can be switched off (e.g. for a slow network file system)
    check_dataset_files(stock_dataset(root), check_integrity=False)
    # labels are checked too, and only with check_labels
    root2 = make_root(tmp_path / 'two')
    with open(osp.join(root2, 'labels', 'c.png'), 'wb') as f:
        f.write(b'GIF89a')
    with pytest.raises(
            ValueError,
            match=r'1 of 3 label files.*\n.*labels/c.png \(line 3 of .*'
            r"is not a PNG image: it starts with b'GIF89a'"):
        check_dataset_files(stock_dataset(root2))
    check_dataset_files(stock_dataset(root2), check_labels=False)
