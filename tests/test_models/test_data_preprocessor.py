# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""``SemiSegDataPreProcessor`` behaves as mmseg's on every branch."""
import copy

import pytest
import torch
from mmengine.structures import PixelData
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_u2pl.models.data_preprocessor import SemiSegDataPreProcessor

SETTINGS = dict(
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(32, 32))


def packed_batch(shapes, with_labels=True, seed=0):
    """A ``pseudo_collate`` batch as ``PackSegInputs`` packs it."""
    gen = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for height, width in shapes:
        inputs.append(
            torch.randint(
                0, 256, (3, height, width), generator=gen, dtype=torch.uint8))
        sample = SegDataSample()
        sample.set_metainfo(
            dict(
                img_shape=(height, width),
                ori_shape=(height, width),
                img_path=f'img_{height}x{width}.png'))
        if with_labels:
            label = torch.randint(0, 6, (1, height, width), generator=gen)
            sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def assert_same_output(ours, plain):
    assert torch.equal(ours['inputs'], plain['inputs'])
    assert ours['inputs'].dtype == plain['inputs'].dtype
    assert len(ours['data_samples']) == len(plain['data_samples'])
    for got, expected in zip(ours['data_samples'], plain['data_samples']):
        assert got.metainfo == expected.metainfo
        assert ('gt_sem_seg' in got) == ('gt_sem_seg' in expected)
        if 'gt_sem_seg' in expected:
            assert torch.equal(got.gt_sem_seg.data, expected.gt_sem_seg.data)


@pytest.mark.parametrize('training', [False, True])
def test_plain_batch_equals_seg_data_preprocessor(training):
    ours = MODELS.build(dict(type='SemiSegDataPreProcessor', **SETTINGS))
    assert isinstance(ours, SemiSegDataPreProcessor)
    plain = SegDataPreProcessor(**SETTINGS)
    # mmseg pads in training only; test batches hold equal sizes
    shapes = [(32, 32), (28, 30), (32, 20)] if training else [(28, 30)] * 3
    batch = packed_batch(shapes)
    out_ours = ours(copy.deepcopy(batch), training)
    out_plain = plain(copy.deepcopy(batch), training)
    assert_same_output(out_ours, out_plain)
    if training:  # the padding really happened
        assert tuple(out_ours['inputs'].shape) == (3, 3, 32, 32)
        padding = out_ours['data_samples'][1].metainfo['padding_size']
        assert tuple(padding) == (0, 2, 0, 4)
    else:
        assert tuple(out_ours['inputs'].shape) == (3, 3, 28, 30)
    # bgr_to_rgb and normalisation: first pixel of image 0, by hand
    raw = batch['inputs'][0][:, 0, 0].float().flip(0)
    expected = (raw - torch.tensor(SETTINGS['mean'])) / torch.tensor(
        SETTINGS['std'])
    torch.testing.assert_close(out_ours['inputs'][0, :, 0, 0], expected)


def test_test_batch_without_labels_equals_seg_data_preprocessor():
    ours = SemiSegDataPreProcessor(**SETTINGS)
    plain = SegDataPreProcessor(**SETTINGS)
    batch = packed_batch([(21, 30), (21, 30)], with_labels=False)
    out_ours = ours(copy.deepcopy(batch), False)
    out_plain = plain(copy.deepcopy(batch), False)
    assert_same_output(out_ours, out_plain)


@pytest.mark.parametrize('training', [True, False])
def test_semi_batch_processes_each_branch_like_the_plain_one(training):
    ours = SemiSegDataPreProcessor(**SETTINGS)
    plain = SegDataPreProcessor(**SETTINGS)
    if training:
        shapes_l, shapes_u = [(32, 32), (24, 32)], [(32, 28), (32, 32),
                                                    (20, 20)]
    else:  # without padding the sizes must agree
        shapes_l, shapes_u = [(32, 32)] * 2, [(32, 32)] * 3
    labeled = packed_batch(shapes_l, seed=1)
    # unlabeled images carry no label files
    unlabeled = packed_batch(shapes_u, with_labels=False, seed=2)
    out = ours(
        dict(
            labeled=copy.deepcopy(labeled),
            unlabeled=copy.deepcopy(unlabeled)), training)
    assert set(out) == {'inputs', 'data_samples'}
    assert set(out['inputs']) == {'labeled', 'unlabeled'}
    assert set(out['data_samples']) == {'labeled', 'unlabeled'}
    for branch, batch in (('labeled', labeled), ('unlabeled', unlabeled)):
        expected = plain(copy.deepcopy(batch), training)
        assert_same_output(
            dict(
                inputs=out['inputs'][branch],
                data_samples=out['data_samples'][branch]), expected)
    assert tuple(out['inputs']['unlabeled'].shape) == (3, 3, 32, 32)
    if training:  # labels are padded with seg_pad_val in training
        gt = out['data_samples']['labeled'][1].gt_sem_seg.data
        assert tuple(gt.shape) == (1, 32, 32)
        assert (gt[:, 24:] == 255).all()


def test_semi_batch_with_unlabeled_ground_truth():
    ours = SemiSegDataPreProcessor(**SETTINGS)
    plain = SegDataPreProcessor(**SETTINGS)
    batch = dict(
        labeled=packed_batch([(32, 32), (32, 32)], seed=3),
        unlabeled=packed_batch([(30, 32), (32, 32)], seed=4))
    out = ours(copy.deepcopy(batch), True)
    expected = plain(copy.deepcopy(batch['unlabeled']), True)
    assert_same_output(
        dict(
            inputs=out['inputs']['unlabeled'],
            data_samples=out['data_samples']['unlabeled']), expected)


def test_batch_augments_are_rejected():
    with pytest.raises(ValueError, match='batch_augments.*CutMix'):
        SemiSegDataPreProcessor(
            **SETTINGS, batch_augments=[dict(type='SomeAugment')])
    with pytest.raises(ValueError, match='batch_augments'):
        MODELS.build(
            dict(
                type='SemiSegDataPreProcessor',
                batch_augments=[dict(type='SomeAugment')],
                **SETTINGS))
    # None (mmseg's default) is fine
    SemiSegDataPreProcessor(**SETTINGS, batch_augments=None)
