# Copyright (c) mmseg_u2pl contributors. All rights reserved.
import filecmp
import json
import os
import os.path as osp
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image
from split_utils import num_from_fraction as labeled_count
from toy_shapes import CLASSES, generate_toy_dataset
from toy_splits import _cover_all_classes, make_split_lists, parse_fractions

SMALL = dict(num_train=48, num_val=8, img_size=32)
FRACTIONS = ('1/16', '1/8', '1/4', '1/2', '1')


def read_list(root, name):
    with open(osp.join(root, 'splits', name + '.txt')) as f:
        return f.read().splitlines()


def read_label(root, name):
    return np.array(Image.open(osp.join(root, 'labels', name + '.png')))


def all_files(root):
    found = []
    for folder, _, names in os.walk(root):
        found += [osp.relpath(osp.join(folder, n), root) for n in names]
    return sorted(found)


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('toy') / 'data')
    summary = generate_toy_dataset(root, seed=0, **SMALL)
    return root, summary


def test_layout_and_summary(toy_root):
    root, summary = toy_root
    assert not summary['reused']
    names = read_list(root, 'train')
    assert names == [f'train_{i:05d}' for i in range(48)]
    assert read_list(root, 'val') == [f'val_{i:05d}' for i in range(8)]
    expected = {'meta.json'}
    expected |= {f'splits/{n}.txt' for n in ('train', 'val')}
    for suffix in ('1-16', '1-8', '1-4', '1-2', '1'):
        expected |= {
            f'splits/labeled_{suffix}.txt', f'splits/unlabeled_{suffix}.txt'
        }
    for name in names + read_list(root, 'val'):
        expected |= {f'images/{name}.png', f'labels/{name}.png'}
    assert set(all_files(root)) == expected
    # ceil(48 * f)
    counts = summary['split_counts']
    assert [
        counts[f'labeled_{s}'] for s in ('1-16', '1-8', '1-4', '1-2', '1')
    ] == [3, 6, 12, 24, 48]
    assert counts['unlabeled_1'] == 0 and counts['unlabeled_1-16'] == 45
    assert summary['classes'] == list(CLASSES)
    freq = summary['class_pixel_freq_train']
    assert sum(freq.values()) == pytest.approx(1., abs=1e-5)
    # frequencies recomputed from the label files
    hist = sum(
        np.bincount(read_label(root, n).ravel(), minlength=6) for n in names)
    np.testing.assert_allclose([freq[c] for c in CLASSES],
                               hist / hist.sum(),
                               atol=1e-6)
    with open(osp.join(root, 'meta.json')) as f:
        meta = json.load(f)
    assert meta['arguments'] == dict(
        num_train=48,
        num_val=8,
        img_size=32,
        seed=0,
        fractions=list(FRACTIONS))
    assert meta['classes'] == list(CLASSES)
    assert meta['split_counts'] == counts
    assert 'generator_version' in meta


def test_images_and_labels(toy_root):
    root, _ = toy_root
    for name in read_list(root, 'train')[:10] + read_list(root, 'val'):
        img = Image.open(osp.join(root, 'images', name + '.png'))
        label = Image.open(osp.join(root, 'labels', name + '.png'))
        assert img.mode == 'RGB' and img.size == (32, 32)
        assert label.mode == 'L' and label.size == (32, 32)
        array = np.array(label)
        assert array.dtype == np.uint8
        assert array.max() < len(CLASSES)
        assert (array > 0).any(), f'{name} shows no object'
        assert np.array(img).std() > 5  # not a blank image


def test_deterministic_and_seeded(tmp_path, toy_root):
    root, _ = toy_root
    again = str(tmp_path / 'again')
    generate_toy_dataset(again, seed=0, **SMALL)
    files = all_files(root)
    assert files == all_files(again)
    match, mismatch, errors = filecmp.cmpfiles(
        root, again, files, shallow=False)
    assert mismatch == [] and errors == [] and len(match) == len(files)

    other = str(tmp_path / 'other')
    generate_toy_dataset(other, seed=1, **SMALL)
    images = [f for f in files if f.startswith('images')]
    _, mismatch, _ = filecmp.cmpfiles(root, other, images, shallow=False)
    assert len(mismatch) == len(images) == 48 + 8  # every image differs


def test_images_independent_of_order(tmp_path, toy_root):
    # image i depends on (seed, split, i) only, not on how many come before
    root, _ = toy_root
    fewer = str(tmp_path / 'fewer')
    generate_toy_dataset(
        fewer, num_train=12, num_val=3, img_size=32, fractions=('1', ))
    for name in ['train_00004', 'val_00002']:
        for sub in ('images', 'labels'):
            assert filecmp.cmp(
                osp.join(root, sub, name + '.png'),
                osp.join(fewer, sub, name + '.png'),
                shallow=False)


def test_split_lists(toy_root):
    root, _ = toy_root
    train = read_list(root, 'train')
    previous = set()
    for suffix, value in parse_fractions(FRACTIONS):
        labeled = read_list(root, f'labeled_{suffix}')
        unlabeled = read_list(root, f'unlabeled_{suffix}')
        assert labeled == sorted(labeled) and unlabeled == sorted(unlabeled)
        assert len(labeled) == labeled_count(48, value)
        assert not set(labeled) & set(unlabeled)
        assert sorted(labeled + unlabeled) == train
        assert previous <= set(labeled), f'{suffix} does not nest'
        previous = set(labeled)
        present = set()
        for name in labeled:
            present |= set(np.unique(read_label(root, name)).tolist())
        assert set(range(1, len(CLASSES))) <= present, \
            f'labeled_{suffix} misses classes'


def test_idempotent_rerun(toy_root):
    root, _ = toy_root
    stamps = {
        f: os.stat(osp.join(root, f)).st_mtime_ns
        for f in all_files(root)
    }
    summary = generate_toy_dataset(root, seed=0, **SMALL)
    assert summary['reused']
    assert {
        f: os.stat(osp.join(root, f)).st_mtime_ns
        for f in all_files(root)
    } == stamps


def test_incomplete_dataset_is_completed(tmp_path):
    root = str(tmp_path / 'toy')
    generate_toy_dataset(
        root, num_train=12, num_val=2, img_size=32, fractions=('1', ))
    with open(osp.join(root, 'images', 'train_00003.png'), 'rb') as f:
        original = f.read()
    os.remove(osp.join(root, 'images', 'train_00003.png'))
    summary = generate_toy_dataset(
        root, num_train=12, num_val=2, img_size=32, fractions=('1', ))
    assert not summary['reused']
    with open(osp.join(root, 'images', 'train_00003.png'), 'rb') as f:
        assert f.read() == original


def test_mismatch_error_and_overwrite(tmp_path):
    root = str(tmp_path / 'toy')
    generate_toy_dataset(
        root, num_train=20, num_val=2, img_size=32, fractions=('1/2', '1'))
    with pytest.raises(
            FileExistsError,
            match=r'num_train 20 \(on disk\) vs 16.*--overwrite'
            r'.*another --out'):
        generate_toy_dataset(
            root, num_train=16, num_val=2, img_size=32, fractions=('1/2', '1'))
    open(osp.join(root, 'images', 'user_file.txt'), 'w').close()
    summary = generate_toy_dataset(
        root,
        num_train=16,
        num_val=2,
        img_size=32,
        fractions=('1', ),
        overwrite=True)
    assert not summary['reused']
    # stale files of the old dataset are gone, foreign files are kept
    assert not osp.exists(osp.join(root, 'images', 'train_00019.png'))
    assert not osp.exists(osp.join(root, 'splits', 'labeled_1-2.txt'))
    assert osp.exists(osp.join(root, 'images', 'user_file.txt'))
    assert len(read_list(root, 'train')) == 16


def test_refuses_foreign_directory(tmp_path):
    root = tmp_path / 'busy'
    root.mkdir()
    (root / 'notes.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='no readable meta.json'):
        generate_toy_dataset(
            str(root), num_train=4, num_val=1, img_size=32, fractions=('1', ))


def test_fraction_parsing_and_bad_arguments(tmp_path):
    assert parse_fractions(['1/16', '0.25', '1']) == [('1-16', Fraction(1,
                                                                        16)),
                                                      ('0.25', Fraction(1, 4)),
                                                      ('1', 1)]
    assert labeled_count(40, Fraction(1, 16)) == 3  # 2.5 rounds up
    assert labeled_count(10, Fraction(1, 16)) == 1  # at least one
    for bad, msg in (('0', r'\(0, 1\]'), ('3/2', r'\(0, 1\]'),
                     ('half', 'not a number')):
        with pytest.raises(ValueError, match=msg):
            parse_fractions([bad])
    with pytest.raises(ValueError, match='same'):
        parse_fractions(['1/2', '0.5'])
    with pytest.raises(ValueError, match='img_size must be >= 16'):
        generate_toy_dataset(
            str(tmp_path / 'x'), num_train=4, num_val=1, img_size=8)


def test_counts_round_up_as_the_published_splits(tmp_path):
    # 100 / 16 = 6.25 -> 7 labeled images (split_utils.num_from_fraction)
    root = str(tmp_path / 'toy')
    args = dict(num_train=100, num_val=1, img_size=16, fractions=('1/16', ))
    summary = generate_toy_dataset(root, **args)
    assert summary['split_counts']['labeled_1-16'] == 7
    assert len(read_list(root, 'labeled_1-16')) == 7
    # lists on disk with other counts for the same arguments are rewritten
    with open(osp.join(root, 'meta.json')) as f:
        meta = json.load(f)
    meta['split_counts']['labeled_1-16'] = 6
    with open(osp.join(root, 'meta.json'), 'w') as f:
        json.dump(meta, f)
    summary = generate_toy_dataset(root, **args)
    assert not summary['reused']
    assert summary['split_counts']['labeled_1-16'] == 7
    assert generate_toy_dataset(root, **args)['reused']


def test_cover_all_classes_swaps_minimally():
    # 4 object classes shown here by 6 images; the first 2 of the order
    # show only class 0, so the prefix must take in images with 1, 2, 3.
    presence = np.array([
        [1, 0, 0, 0],
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [0, 1, 1, 1],
        [1, 0, 0, 0],
        [0, 0, 1, 0],
    ],
                        dtype=bool)
    order = np.arange(6)
    repaired = _cover_all_classes(order, 2, presence)
    assert sorted(repaired.tolist()) == list(range(6))
    assert presence[repaired[:2]].any(axis=0).all()
    assert set(repaired[:2].tolist()) == {0, 3}
    # impossible with one image
    with pytest.raises(ValueError, match='increase num_train'):
        _cover_all_classes(order, 1, presence)


def test_make_split_lists_nested_and_covering():
    rng = np.random.default_rng(0)
    presence = rng.random((200, 5)) < 0.4
    lists = make_split_lists(presence, ('1/100', '1/10', '1/2'), seed=3)
    small, mid, half = (
        set(lists[f'labeled_{s}']) for s in ('1-100', '1-10', '1-2'))
    assert len(small) == 2 and len(mid) == 20 and len(half) == 100
    assert small <= mid <= half
    assert presence[sorted(small)].any(axis=0).all()
    assert set(lists['unlabeled_1-10']) == set(range(200)) - mid
    assert make_split_lists(presence, ('1/100', '1/10', '1/2'), seed=3) == \
        lists
