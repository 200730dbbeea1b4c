# Copyright (c) mmseg_u2pl contributors. All rights reserved.
import filecmp
import json
import os
import os.path as osp

import numpy as np
import pytest
from mmengine.registry import init_default_scope
from PIL import Image
from toy_drawing import SHAPES
from toy_shapes import CLASSES as TOY_CLASSES
from toy_shapes21 import (CLASS_PROBS, CLASSES, HUE_SPREAD, HUES,
                          OBJECT_CLASSES, PALETTE, SOURCE_ATTRIBUTES,
                          SOURCE_SHAPES, TONES, frequency_ranks,
                          generate_toy21_dataset, render_sample,
                          render_source_sample)

from mmseg_u2pl.datasets import ToyShapes21Dataset

SMALL = dict(num_train=96, num_val=8, img_size=48, fractions=('1/4', '1'))


def all_files(root):
    found = []
    for folder, _, names in os.walk(root):
        found += [osp.relpath(osp.join(folder, n), root) for n in names]
    return sorted(found)


def read_list(root, name):
    with open(osp.join(root, 'splits', name + '.txt')) as f:
        return f.read().splitlines()


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('toy21') / 'data')
    generate_toy21_dataset(out, seed=0, **SMALL)
    return out


def test_class_set_and_groups():
    assert len(CLASSES) == 21 and CLASSES[0] == 'background'
    assert len(set(CLASSES)) == 21 and len(PALETTE) == 21
    assert ToyShapes21Dataset.METAINFO['classes'] == CLASSES
    # ten pairs: each has its own hue, and its members share one of
    # outline / texture and differ in the other
    pairs = [OBJECT_CLASSES[i:i + 2] for i in range(0, 20, 2)]
    assert len({a.hue for a, _ in pairs}) == 10
    for a, b in pairs:
        assert a.hue == b.hue
        assert (a.shape == b.shape) != (a.texture == b.texture), (a, b)
        # and tones: the first light, the second dark
        assert (a.tone, b.tone) == ('light', 'dark')
        assert a.name.startswith(f'light-{a.hue}-')
        assert b.name.startswith(f'dark-{b.hue}-')
    # every class is a distinct (shape, hue, texture)
    assert len({(c.shape, c.hue, c.texture) for c in OBJECT_CLASSES}) == 20
    # the tones' ranges overlap (some pixels are ambiguous by colour)
    light, dark = TONES['light'], TONES['dark']
    for key in ('saturation', 'value'):
        assert light[key][0] < dark[key][1] and dark[key][0] < light[key][1]
    assert light['value'][1] > dark['value'][1]
    assert light['saturation'][0] < dark['saturation'][0]
    # neighbouring group hues lie at least 4 spreads apart
    hues = sorted(HUES.values()) + [1.]
    assert min(b - a for a, b in zip(hues, hues[1:])) >= 4 * HUE_SPREAD
    # the pretraining outlines are none of the target's
    assert not set(SOURCE_SHAPES) & {c.shape for c in OBJECT_CLASSES}
    assert not set(SOURCE_SHAPES) & set(TOY_CLASSES)
    assert set(SOURCE_SHAPES) | {c.shape
                                 for c in OBJECT_CLASSES} <= set(SHAPES)
    assert [len(v) for v in SOURCE_ATTRIBUTES.values()] == [8, 12, 2, 4]


def test_long_tailed_frequency():
    ranks = frequency_ranks()
    assert sorted(ranks.tolist()) == list(range(1, 21))
    # the first member of each pair ranks 1-10, the second 11-20
    assert ranks[0::2].tolist() == list(range(1, 11))
    assert ranks[1::2].tolist() == list(range(11, 21))
    assert CLASS_PROBS.sum() == pytest.approx(1.)
    assert CLASS_PROBS[0] == pytest.approx(
        1 / sum(k**-0.5 for k in range(1, 21)))
    assert CLASS_PROBS[0] / CLASS_PROBS[19] == pytest.approx(20**0.5)


def test_layout_and_meta(root):
    names = read_list(root, 'train')
    assert names == [f'train_{i:05d}' for i in range(96)]
    expected = {'meta.json', 'splits/train.txt', 'splits/val.txt'}
    for suffix in ('1-4', '1'):
        expected |= {
            f'splits/labeled_{suffix}.txt', f'splits/unlabeled_{suffix}.txt'
        }
    for name in names + read_list(root, 'val'):
        expected |= {f'images/{name}.png', f'labels/{name}.png'}
    assert set(all_files(root)) == expected
    with open(osp.join(root, 'meta.json')) as f:
        meta = json.load(f)
    assert meta['generator'] == 'mmseg_u2pl.datasets.toy21_generator'
    assert meta['classes'] == list(CLASSES)
    assert meta['split_counts']['labeled_1-4'] == 24
    # the smallest labeled set shows every class
    shown = set()
    for name in read_list(root, 'labeled_1-4'):
        shown |= set(
            np.unique(
                np.array(Image.open(osp.join(root, 'labels',
                                             name + '.png')))).tolist())
    assert shown == set(range(21))
    for name in names[:8]:
        img = Image.open(osp.join(root, 'images', name + '.png'))
        label = np.array(Image.open(osp.join(root, 'labels', name + '.png')))
        assert img.mode == 'RGB' and img.size == (48, 48)
        assert label.dtype == np.uint8 and label.max() < 21
        assert len(np.unique(label)) >= 2  # background and an object


def test_seeded_and_deterministic(tmp_path, root):
    again = str(tmp_path / 'again')
    generate_toy21_dataset(again, seed=0, **SMALL)
    files = all_files(root)
    match, mismatch, errors = filecmp.cmpfiles(
        root, again, files, shallow=False)
    assert mismatch == [] and errors == [] and len(match) == len(files)
    image_a, label_a = render_sample(np.random.default_rng([1, 0, 3]), 48)
    image_b, label_b = render_sample(np.random.default_rng([2, 0, 3]), 48)
    assert not np.array_equal(image_a, image_b)


def test_refuses_another_generators_dataset(tmp_path):
    from toy_shapes import generate_toy_dataset
    out = str(tmp_path / 'toy')
    generate_toy_dataset(
        out, num_train=16, num_val=2, img_size=32, fractions=('1', ))
    with pytest.raises(FileExistsError, match='toy_generator'):
        generate_toy21_dataset(out, **SMALL)


def test_dataset_class_reads_it(root):
    init_default_scope('mmseg')  # resolve mmseg's transforms by name
    dataset = ToyShapes21Dataset(
        data_root=root,
        ann_file='splits/labeled_1-4.txt',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='PackSegInputs')
        ])
    assert len(dataset) == 24
    sample = dataset[0]
    assert sample['inputs'].shape == (3, 48, 48)
    with pytest.raises(FileNotFoundError, match='--dataset toy21'):
        ToyShapes21Dataset(
            data_root=str(root) + '_missing',
            ann_file='splits/train.txt',
            pipeline=[])


def test_source_images():
    seen = [set() for _ in range(4)]
    for index in range(16):
        image, labels = render_source_sample(
            np.random.default_rng([0, 1000, index]), 64)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert labels.shape == (4, 64, 64) and labels.dtype == np.uint8
        background = labels[0] == 0
        assert background.any() and not background.all()
        # the other attributes are ignored exactly on the background
        assert ((labels[1:] == 255) == background).all()
        for channel in range(4):
            seen[channel] |= set(np.unique(labels[channel]).tolist())
    sizes = [len(v) for v in SOURCE_ATTRIBUTES.values()]
    assert seen[0] == set(range(sizes[0] + 1))  # every outline and 0
    for channel, size in enumerate(sizes[1:], 1):
        assert seen[channel] - {255} <= set(range(size))
    assert seen[2] - {255} == {0, 1} and len(seen[1]) > 8


def test_tones_are_drawn():
    """Object pixels of light classes are brighter and paler than those of
    dark classes (HSV value and saturation, over a few images)."""
    import colorsys
    stats = dict(light=[], dark=[])
    for index in range(12):
        image, label = render_sample(
            np.random.default_rng([5, 0, index]), 96)
        for class_id in set(np.unique(label).tolist()) - {0}:
            pixels = image[label == class_id].astype(float) / 255.
            hsv = np.array([colorsys.rgb_to_hsv(*p) for p in pixels[::7]])
            tone = OBJECT_CLASSES[class_id - 1].tone
            stats[tone].append(hsv[:, 1:].mean(axis=0))
    light, dark = np.mean(stats['light'], 0), np.mean(stats['dark'], 0)
    assert light[1] > dark[1] + 0.1  # value
    assert light[0] < dark[0] - 0.1  # saturation
