# Copyright (c) mmseg_u2pl contributors. All rights reserved.
import os.path as osp
import shutil

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS
from PIL import Image
from toy_shapes import generate_toy_dataset

from mmseg_u2pl.datasets.toy_dataset import TOY_CLASSES as CLASSES
from mmseg_u2pl.datasets.toy_dataset import TOY_PALETTE as PALETTE
from mmseg_u2pl.datasets.toy_dataset import ToyShapesDataset

LABELED_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
UNLABELED_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='PackSegInputs'),
]


@pytest.fixture(scope='module', autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')  # resolve mmseg's transforms by name


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('toy') / 'data')
    generate_toy_dataset(
        root, num_train=48, num_val=8, img_size=32, fractions=('1/8', '1'))
    return root


def copy_of(toy_root, tmp_path):
    root = str(tmp_path / 'copy')
    shutil.copytree(toy_root, root)
    return root


def test_labeled_set_from_registry(toy_root):
    dataset = DATASETS.build(
        dict(
            type='ToyShapesDataset',
            data_root=toy_root,
            ann_file='splits/labeled_1-8.txt',
            pipeline=LABELED_PIPELINE))
    assert isinstance(dataset, ToyShapesDataset)
    assert len(dataset) == 6
    assert dataset.metainfo['classes'] == CLASSES
    assert [list(p) for p in dataset.metainfo['palette']] == PALETTE
    with open(osp.join(toy_root, 'splits', 'labeled_1-8.txt')) as f:
        first = f.readline().strip()
    item = dataset[0]
    inputs, sample = item['inputs'], item['data_samples']
    assert inputs.shape == (3, 32, 32) and inputs.dtype == torch.uint8
    gt = sample.gt_sem_seg.data
    assert gt.shape == (1, 32, 32)
    label = np.array(Image.open(osp.join(toy_root, 'labels', first + '.png')))
    np.testing.assert_array_equal(gt[0].numpy(), label)
    # LoadImageFromFile gives BGR
    image = np.array(Image.open(osp.join(toy_root, 'images', first + '.png')))
    np.testing.assert_array_equal(
        inputs.permute(1, 2, 0).numpy(), image[..., ::-1])
    assert sample.metainfo['img_path'].endswith(f'images/{first}.png')


def test_val_set(toy_root):
    dataset = ToyShapesDataset(
        data_root=toy_root,
        ann_file='splits/val.txt',
        pipeline=LABELED_PIPELINE,
        test_mode=True)
    assert len(dataset) == 8
    assert dataset[7]['data_samples'].gt_sem_seg.data.shape == (1, 32, 32)


def test_unlabeled_set_needs_no_labels(toy_root, tmp_path):
    root = copy_of(toy_root, tmp_path)
    shutil.rmtree(osp.join(root, 'labels'))
    dataset = ToyShapesDataset(
        data_root=root,
        ann_file='splits/unlabeled_1-8.txt',
        data_prefix=dict(img_path='images'),
        pipeline=UNLABELED_PIPELINE)
    assert len(dataset) == 42
    item = dataset[3]
    assert item['inputs'].shape == (3, 32, 32)
    assert 'gt_sem_seg' not in item['data_samples']
    # the labeled form of the same data must refuse, naming a label file
    with pytest.raises(
            FileNotFoundError, match=r'(?s)label files.*labels/train_'):
        ToyShapesDataset(data_root=root, ann_file='splits/labeled_1-8.txt')


def test_construction_errors_name_the_fix(toy_root, tmp_path):
    missing = str(tmp_path / 'nowhere')
    with pytest.raises(
            FileNotFoundError,
            match=r'data_root .*nowhere.*make_toy_dataset.py'):
        ToyShapesDataset(data_root=missing, ann_file='splits/train.txt')
    with pytest.raises(
            FileNotFoundError,
            match=r'splits/labeled_1-16.txt.*labeled_1-8.txt'):
        ToyShapesDataset(
            data_root=toy_root, ann_file='splits/labeled_1-16.txt')
    with pytest.raises(ValueError, match=r'empty.*unlabeled_1.txt'):
        ToyShapesDataset(
            data_root=toy_root,
            ann_file='splits/unlabeled_1.txt',
            data_prefix=dict(img_path='images'))


def test_lazy_init_defers_checks(tmp_path):
    dataset = ToyShapesDataset(
        data_root=str(tmp_path / 'later'),
        ann_file='splits/train.txt',
        lazy_init=True)
    assert not dataset._fully_initialized
    with pytest.raises(FileNotFoundError, match='data_root'):
        dataset.full_init()


def test_bad_label_value_raises_on_load(toy_root, tmp_path):
    root = copy_of(toy_root, tmp_path)
    label_path = osp.join(root, 'labels', 'val_00002.png')
    label = np.array(Image.open(label_path))
    label[0, :3] = 9
    Image.fromarray(label).save(label_path)
    dataset = ToyShapesDataset(
        data_root=root, ann_file='splits/val.txt', pipeline=LABELED_PIPELINE)
    dataset[1]  # an untouched sample loads
    with pytest.raises(
            ValueError, match=r"val_00002.png.*\[9\].*\[0, 6\).*255"):
        dataset[2]


def test_damaged_file_is_named_on_load(toy_root, tmp_path):
    root = copy_of(toy_root, tmp_path)
    dataset = ToyShapesDataset(
        data_root=root, ann_file='splits/val.txt', pipeline=LABELED_PIPELINE)
    label_path = osp.join(root, 'labels', 'val_00003.png')
    with open(label_path, 'r+b') as f:  # both ends of the PNG stay intact
        f.seek(f.seek(0, 2) // 2)
        f.write(b'\xff' * 8)
    dataset[2]
    with pytest.raises(
            OSError,
            match=r"^ToyShapesDataset sample 3 \(img_path='.*images/"
            r"val_00003\.png', seg_map_path='.*labels/val_00003\.png'\) "
            r'failed to load: OSError: .*data stream'):
        dataset[3]
    # the build-time check reads only both ends of each file: it passes
    ToyShapesDataset(data_root=root, ann_file='splits/val.txt')
    # a truncated file is found at construction
    with open(label_path, 'r+b') as f:
        f.truncate(40)
    with pytest.raises(
            ValueError,
            match=r'labels/val_00003\.png \(line 4 of .*val\.txt'
            r'\): is truncated'):
        ToyShapesDataset(data_root=root, ann_file='splits/val.txt')
