# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""``SemiDataset``: pairing, balance, samplers, loaders and bad input."""
import collections
import os
import os.path as osp
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmseg.registry import DATASETS
from PIL import Image
from toy_fixtures import toy_data_root  # noqa: F401  (pytest fixture)
from toy_fixtures import toy_split
from torch import nn

from mmseg_u2pl.datasets.semi_dataset import SemiDataset
from mmseg_u2pl.datasets.toy_dataset import TOY_CLASSES as CLASSES
from mmseg_u2pl.datasets.toy_dataset import TOY_PALETTE as PALETTE
from mmseg_u2pl.engine.hooks.mean_teacher_hook import MeanTeacherHook

LABELED_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
UNLABELED_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='PackSegInputs'),
]


@pytest.fixture(autouse=True)
def mmseg_scope():
    """Resolve mmseg's transforms and datasets by name."""
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


def write_split(path, names):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(''.join(name + '\n' for name in names))
    return str(path)


def toy_side(data_root, ann_file, labeled=True, **kwargs):
    """A ToyShapesDataset config; unlabeled sides read images only."""
    cfg = dict(
        type='ToyShapesDataset',
        data_root=data_root,
        ann_file=ann_file,
        pipeline=LABELED_PIPELINE if labeled else UNLABELED_PIPELINE)
    if not labeled:
        cfg['data_prefix'] = dict(img_path='images')
    cfg.update(kwargs)
    return cfg


def plain_side(data_root, ann_file, labeled=True):
    """A stock mmseg ``BaseSegDataset`` config (no validation of its own)."""
    return dict(
        type='BaseSegDataset',
        data_root=data_root,
        ann_file=ann_file,
        metainfo=dict(classes=CLASSES, palette=PALETTE),
        img_suffix='.png',
        seg_map_suffix='.png',
        data_prefix=dict(img_path='images', seg_map_path='labels')
        if labeled else dict(img_path='images'),
        pipeline=LABELED_PIPELINE if labeled else UNLABELED_PIPELINE)


@pytest.fixture
def small_splits(toy_data_root, tmp_path):  # noqa: F811
    """5 labeled and 13 unlabeled toy images (13 / 5 = 2.6)."""
    names = toy_split(toy_data_root, 'train')
    labeled = write_split(tmp_path / 'labeled5.txt', names[:5])
    unlabeled = write_split(tmp_path / 'unlabeled13.txt', names[5:18])
    return SimpleNamespace(
        root=toy_data_root,
        labeled=labeled,
        unlabeled=unlabeled,
        labeled_names=names[:5],
        unlabeled_names=names[5:18])


def build_semi(splits, seed=0, **kwargs):
    return DATASETS.build(
        dict(
            type='SemiDataset',
            labeled=toy_side(splits.root, splits.labeled),
            unlabeled=toy_side(splits.root, splits.unlabeled, labeled=False),
            seed=seed,
            **kwargs))


def stem(path):
    return osp.splitext(osp.basename(path))[0]


def labeled_names_of_epoch(dataset):
    return [
        stem(dataset[i]['labeled']['data_samples'].img_path)
        for i in range(len(dataset))
    ]


# ---------------------------------------------------------------------------
# items, length, balance, seeds
# ---------------------------------------------------------------------------
def test_item_is_a_labeled_and_an_unlabeled_packed_sample(small_splits):
    dataset = build_semi(small_splits)
    assert len(dataset) == 13  # one epoch = one pass over the unlabeled set
    item = dataset[4]
    assert set(item) == {'labeled', 'unlabeled'}
    for branch in ('labeled', 'unlabeled'):
        assert set(item[branch]) == {'inputs', 'data_samples'}
        assert tuple(item[branch]['inputs'].shape) == (3, 32, 32)
        assert item[branch]['inputs'].dtype == torch.uint8
    # item i pairs unlabeled sample i with labeled sample labeled_order[i]
    assert stem(item['unlabeled']['data_samples'].img_path) == \
        small_splits.unlabeled_names[4]
    assert stem(item['labeled']['data_samples'].img_path) == \
        small_splits.labeled_names[dataset.labeled_order[4]]
    assert 'gt_sem_seg' in item['labeled']['data_samples']
    assert dataset.metainfo['classes'] == CLASSES


def test_labeled_samples_are_used_equally_often(small_splits):
    dataset = build_semi(small_splits)
    counts = collections.Counter(labeled_names_of_epoch(dataset))
    assert set(counts) == set(small_splits.labeled_names)
    # 13 unlabeled / 5 labeled: every labeled image 2 or 3 times
    assert sorted(counts.values()) == [2, 2, 3, 3, 3]
    # each full pass over the labeled set is a permutation of it
    order = dataset.labeled_order
    assert sorted(order[:5]) == list(range(5))
    assert sorted(order[5:10]) == list(range(5))


def test_labeled_order_depends_on_the_seed_only(small_splits):
    first = build_semi(small_splits, seed=3)
    again = build_semi(small_splits, seed=3)
    other = build_semi(small_splits, seed=4)
    assert np.array_equal(first.labeled_order, again.labeled_order)
    assert labeled_names_of_epoch(first) == labeled_names_of_epoch(again)
    assert not np.array_equal(first.labeled_order, other.labeled_order)


# ---------------------------------------------------------------------------
# samplers and data loaders
# ---------------------------------------------------------------------------
def check_batch_pairing(batch, dataset, splits, batch_size):
    """A pseudo_collate batch: dict of branches, pairs as the dataset says."""
    assert set(batch) == {'labeled', 'unlabeled'}
    unlabeled = [stem(s.img_path) for s in batch['unlabeled']['data_samples']]
    labeled = [stem(s.img_path) for s in batch['labeled']['data_samples']]
    assert len(unlabeled) == len(labeled) <= batch_size
    assert len(batch['labeled']['inputs']) == len(labeled)
    for name_u, name_l in zip(unlabeled, labeled):
        index = splits.unlabeled_names.index(name_u)
        assert name_l == splits.labeled_names[dataset.labeled_order[index]]
    return unlabeled


@pytest.mark.parametrize('num_workers', [0, 2])
def test_default_sampler_dataloader_covers_the_unlabeled_set(
        small_splits, num_workers):
    dataset = build_semi(small_splits)
    loader = Runner.build_dataloader(
        dict(
            batch_size=4,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=dataset),
        seed=0)
    for epoch in range(2):  # persistent workers serve a second epoch
        loader.sampler.set_epoch(epoch)
        seen = []
        for batch in loader:
            seen += check_batch_pairing(batch, dataset, small_splits, 4)
        assert sorted(seen) == sorted(small_splits.unlabeled_names)
        assert len(seen) == 13


@pytest.mark.parametrize('num_workers', [0, 2])
def test_infinite_sampler_dataloader(small_splits, num_workers):
    loader = Runner.build_dataloader(
        dict(
            batch_size=3,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            sampler=dict(type='InfiniteSampler', shuffle=True),
            dataset=dict(
                type='SemiDataset',
                labeled=toy_side(small_splits.root, small_splits.labeled),
                unlabeled=toy_side(
                    small_splits.root, small_splits.unlabeled,
                    labeled=False))),
        seed=0)
    dataset = loader.dataset
    assert isinstance(dataset, SemiDataset)
    seen = []
    batches = iter(loader)
    for _ in range(9):  # 27 items: more than two passes
        batch = next(batches)
        assert len(batch['unlabeled']['inputs']) == 3
        seen += check_batch_pairing(batch, dataset, small_splits, 3)
    # InfiniteSampler yields whole shuffled passes one after the other
    assert sorted(seen[:13]) == sorted(small_splits.unlabeled_names)
    assert sorted(seen[13:26]) == sorted(small_splits.unlabeled_names)


def test_unlabeled_side_needs_no_label_files(small_splits, tmp_path):
    # a data root holding images only
    root = tmp_path / 'images_only'
    os.makedirs(root / 'images')
    for name in small_splits.unlabeled_names:
        os.symlink(
            osp.join(small_splits.root, 'images', name + '.png'),
            root / 'images' / (name + '.png'))
    dataset = DATASETS.build(
        dict(
            type='SemiDataset',
            labeled=toy_side(small_splits.root, small_splits.labeled),
            unlabeled=toy_side(
                str(root), small_splits.unlabeled, labeled=False)))
    loader = Runner.build_dataloader(
        dict(
            batch_size=4,
            num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dataset))
    batch = next(iter(loader))
    assert all('gt_sem_seg' not in s
               for s in batch['unlabeled']['data_samples'])
    assert all('gt_sem_seg' in s for s in batch['labeled']['data_samples'])
    assert len(batch['unlabeled']['inputs']) == 4


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
def test_different_class_lists_are_rejected(small_splits):
    unlabeled = toy_side(
        small_splits.root,
        small_splits.unlabeled,
        labeled=False,
        metainfo=dict(classes=('background', 'disk')))
    with pytest.raises(ValueError) as info:
        DATASETS.build(
            dict(
                type='SemiDataset',
                labeled=toy_side(small_splits.root, small_splits.labeled),
                unlabeled=unlabeled))
    message = str(info.value)
    assert 'different class lists' in message
    assert re.search(
        r"labeled: +\('background', 'disk', 'square', "
        r"'triangle', 'ring', 'cross'\)", message)
    assert re.search(r"unlabeled: +\('background', 'disk'\)", message)
    assert 'train_dataloader.dataset.unlabeled' in message


@pytest.mark.parametrize('side', ['labeled', 'unlabeled'])
@pytest.mark.parametrize('dataset_type',
                         ['ToyShapesDataset', 'BaseSegDataset'])
def test_empty_split_is_a_clear_error(small_splits, tmp_path, side,
                                      dataset_type):
    empty = write_split(tmp_path / f'empty_{side}.txt', [])
    make = toy_side if dataset_type == 'ToyShapesDataset' else plain_side
    sides = dict(
        labeled=make(small_splits.root, small_splits.labeled),
        unlabeled=make(
            small_splits.root, small_splits.unlabeled, labeled=False))
    sides[side] = make(small_splits.root, empty, labeled=side == 'labeled')
    with pytest.raises(ValueError) as info:
        DATASETS.build(dict(type='SemiDataset', **sides))
    message = str(info.value)
    assert f'`train_dataloader.dataset.{side}`' in message
    assert empty in message  # the split file
    assert 'empty' in message
    assert 'Fix:' in message


def test_empty_prebuilt_dataset_is_rejected(small_splits):

    class Empty(torch.utils.data.Dataset):
        metainfo = dict(classes=CLASSES)

        def __len__(self):
            return 0

    with pytest.raises(ValueError, match=r'unlabeled.*(empty|no samples)'):
        SemiDataset(
            labeled=toy_side(small_splits.root, small_splits.labeled),
            unlabeled=Empty(),
            check_files=False)


@pytest.mark.parametrize('side', ['labeled', 'unlabeled'])
@pytest.mark.parametrize('dataset_type',
                         ['ToyShapesDataset', 'BaseSegDataset'])
def test_missing_image_is_named_at_construction(small_splits, tmp_path, side,
                                                dataset_type, monkeypatch):
    names = getattr(small_splits, f'{side}_names') + ['train_99999']
    split = write_split(tmp_path / f'missing_{side}.txt', names)
    make = toy_side if dataset_type == 'ToyShapesDataset' else plain_side
    sides = dict(
        labeled=make(small_splits.root, small_splits.labeled),
        unlabeled=make(
            small_splits.root, small_splits.unlabeled, labeled=False))
    sides[side] = make(small_splits.root, split, labeled=side == 'labeled')
    # nothing is loaded before the error: construction alone fails
    loaded = []
    monkeypatch.setattr(SemiDataset, '__getitem__',
                        lambda self, i: loaded.append(i))
    with pytest.raises(FileNotFoundError) as info:
        DATASETS.build(dict(type='SemiDataset', **sides))
    message = str(info.value)
    missing = osp.join(small_splits.root, 'images', 'train_99999.png')
    assert missing in message
    assert f'line {len(names)} of {split}' in message
    assert f'train_dataloader.dataset.{side}' in message
    assert loaded == []


def test_out_of_range_label_names_the_file(small_splits, tmp_path):
    root = tmp_path / 'bad_labels'
    for sub in ('images', 'labels'):
        os.makedirs(root / sub)
    names = small_splits.labeled_names
    for name in names:
        os.symlink(
            osp.join(small_splits.root, 'images', name + '.png'),
            root / 'images' / (name + '.png'))
        label = np.array(
            Image.open(osp.join(small_splits.root, 'labels', name + '.png')))
        if name == names[2]:
            label[3, 4] = 9  # 6 classes: 9 is out of range
        Image.fromarray(label).save(root / 'labels' / (name + '.png'))
    # a stock mmseg dataset: the wrapper itself checks the label values
    dataset = DATASETS.build(
        dict(
            type='SemiDataset',
            labeled=plain_side(str(root), small_splits.labeled),
            unlabeled=plain_side(
                small_splits.root, small_splits.unlabeled, labeled=False)))
    bad_items = [
        i for i in range(len(dataset)) if dataset.labeled_order[i] == 2
    ]
    good = next(i for i in range(len(dataset)) if i not in bad_items)
    dataset[good]  # valid labels load fine
    with pytest.raises(ValueError) as info:
        dataset[bad_items[0]]
    message = str(info.value)
    assert str(root / 'labels' / (names[2] + '.png')) in message
    assert '[9]' in message


@pytest.mark.parametrize('dataset_type',
                         ['ToyShapesDataset', 'BaseSegDataset'])
def test_labels_are_checked_once_per_labeled_sample(small_splits, monkeypatch,
                                                    dataset_type):
    """By the labeled dataset if it checks them itself, else the wrapper."""
    from mmseg_u2pl.datasets import semi_dataset, toy_dataset
    checked = []
    for module in (semi_dataset, toy_dataset):
        check = module.check_label_values
        monkeypatch.setattr(
            module,
            'check_label_values',
            lambda *args, check=check, name=module.__name__:
            (checked.append(name), check(*args)))
    make = toy_side if dataset_type == 'ToyShapesDataset' else plain_side
    dataset = DATASETS.build(
        dict(
            type='SemiDataset',
            labeled=make(small_splits.root, small_splits.labeled),
            unlabeled=make(
                small_splits.root, small_splits.unlabeled, labeled=False)))
    for i in range(3):
        dataset[i]
    checker = toy_dataset if dataset_type == 'ToyShapesDataset' else \
        semi_dataset
    assert checked == [checker.__name__] * 3


def damage_middle(path):
    """Overwrite the middle of a file: both ends stay intact."""
    with open(path, 'r+b') as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(size // 2)
        f.write(b'\xff' * 8)


def test_label_damaged_after_construction_is_named_on_load(
        small_splits, tmp_path):
    root = tmp_path / 'copy'
    shutil.copytree(small_splits.root, root)
    dataset = DATASETS.build(
        dict(
            type='SemiDataset',
            labeled=plain_side(str(root), small_splits.labeled),
            unlabeled=plain_side(
                str(root), small_splits.unlabeled, labeled=False)))
    label = root / 'labels' / (small_splits.labeled_names[1] + '.png')
    damage_middle(label)
    index = int(np.flatnonzero(dataset.labeled_order == 1)[0])
    with pytest.raises(OSError) as info:
        dataset[index]
    message = str(info.value)
    # PIL alone says e.g. 'broken data stream when reading image file'
    assert message.startswith(
        'SemiDataset: labeled sample 1 (`train_dataloader.dataset.labeled`) '
        f"(img_path='{root}/images/{label.name}', seg_map_path='{label}') "
        'failed to load: OSError: '), message
    assert 'data stream' in message
    assert 'corrupt or truncated' in message


def test_check_batch_size(small_splits):
    dataset = build_semi(small_splits)  # 13 unlabeled images
    dataset.check_batch_size(4, 1)
    dataset.check_batch_size(13, 1)  # exactly one full batch
    dataset.check_batch_size(6, 2)
    with pytest.raises(ValueError) as info:
        dataset.check_batch_size(7, 2)
    message = str(info.value)
    assert 'train_dataloader.batch_size=7' in message
    assert '14' in message and '13' in message
    with pytest.raises(ValueError, match='train_dataloader.batch_size'):
        dataset.check_batch_size(14, 1)
    with pytest.raises(ValueError, match='positive int'):
        dataset.check_batch_size(0, 1)
    with pytest.warns(UserWarning, match='CutMix.*BatchNorm'):
        dataset.check_batch_size(1, 1)


class TinyMeanTeacher(nn.Module):
    """What MeanTeacherHook needs from a model."""

    def __init__(self):
        super().__init__()
        self.student = nn.Conv2d(1, 1, 1)
        self.teacher = nn.Conv2d(1, 1, 1)
        self.semi_active = None


def test_mean_teacher_hook_checks_the_batch_size_before_training(small_splits):
    dataset = build_semi(small_splits)
    model = TinyMeanTeacher()

    def runner(batch_size):
        return SimpleNamespace(
            iter=0,
            model=model,
            message_hub=MessageHub.get_current_instance(),
            train_dataloader=SimpleNamespace(
                dataset=dataset, batch_size=batch_size))

    hook = MeanTeacherHook(warmup_iters=0)
    with pytest.raises(ValueError, match='train_dataloader.batch_size=16'):
        hook.before_train(runner(16))
    hook.before_train(runner(4))  # fits: the teacher is copied
    assert torch.equal(model.teacher.weight, model.student.weight)
    with pytest.warns(UserWarning, match='batch_size=1'):
        hook.before_train(runner(1))


# ---------------------------------------------------------------------------
# overlap and the larger labeled side (domain adaptation)
# ---------------------------------------------------------------------------
def test_overlapping_splits_are_rejected_with_lines(small_splits, tmp_path):
    # unlabeled list whose 3rd line is the 2nd labeled image
    names = small_splits.unlabeled_names[:2] + \
        [small_splits.labeled_names[1]] + small_splits.unlabeled_names[2:]
    small_splits.unlabeled = write_split(tmp_path / 'overlap.txt', names)
    with pytest.raises(ValueError) as error:
        build_semi(small_splits)
    message = str(error.value)
    assert small_splits.labeled_names[1] in message
    assert f'line 2 of {small_splits.labeled}' in message
    assert f'line 3 of {small_splits.unlabeled}' in message


def test_larger_labeled_side_is_used_entirely(small_splits):
    # swap roles: 13 labeled, 5 unlabeled -> an epoch covers all 13 labeled
    small_splits.labeled, small_splits.unlabeled = \
        small_splits.unlabeled, small_splits.labeled
    small_splits.labeled_names, small_splits.unlabeled_names = \
        small_splits.unlabeled_names, small_splits.labeled_names
    dataset = build_semi(small_splits)
    assert len(dataset) == 13
    assert sorted(labeled_names_of_epoch(dataset)) == sorted(
        small_splits.labeled_names)
    unlabeled = collections.Counter(
        stem(dataset[i]['unlabeled']['data_samples'].img_path)
        for i in range(len(dataset)))
    assert set(unlabeled) == set(small_splits.unlabeled_names)
    assert sorted(unlabeled.values()) == [2, 2, 3, 3, 3]
