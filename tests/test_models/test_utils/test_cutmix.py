# Copyright (c) mmseg_u2pl contributors. All rights reserved.
import pytest
import torch

from mmseg_u2pl.models.utils.cutmix import apply_cutmix, cutmix_masks


@pytest.mark.parametrize('area_ratio', [0.5, 0.25])
def test_box_area_and_shape(area_ratio):
    gen = torch.Generator().manual_seed(0)
    height, width = 40, 60
    for _ in range(20):
        mask = cutmix_masks(
            6, height, width, prob=1., area_ratio=area_ratio, generator=gen)
        assert mask.shape == (6, height, width) and mask.dtype == torch.bool
        for m in mask:
            rows = m.any(dim=1).nonzero().flatten()
            cols = m.any(dim=0).nonzero().flatten()
            box_h = rows.max() - rows.min() + 1
            box_w = cols.max() - cols.min() + 1
            # the mask is exactly one axis-aligned box
            assert m.sum() == box_h * box_w
            # width in (ratio * W, W], area ~= ratio * H * W (rounding)
            assert area_ratio * width <= box_w <= width
            target = area_ratio * height * width
            assert abs(m.sum().item() - target) <= box_w + box_h


def test_probability_per_batch_and_per_sample():
    gen = torch.Generator().manual_seed(1)
    never = cutmix_masks(4, 8, 8, prob=0., generator=gen)
    assert not never.any()
    per_batch = [
        cutmix_masks(8, 8, 8, prob=0.5, generator=gen) for _ in range(200)
    ]
    # per batch: either every image is mixed or none is
    for m in per_batch:
        mixed = m.flatten(1).any(dim=1)
        assert mixed.all() or not mixed.any()
    rate = sum(m.any().item() for m in per_batch) / len(per_batch)
    assert 0.35 < rate < 0.65
    per_sample = torch.stack([
        cutmix_masks(8, 8, 8, prob=0.5, per_sample=True,
                     generator=gen).flatten(1).any(dim=1) for _ in range(100)
    ])
    # per sample: some batches are partly mixed
    partly = (per_sample.any(dim=1) & ~per_sample.all(dim=1)).float().mean()
    assert partly > 0.5


def test_apply_cutmix_label_image_consistency():
    gen = torch.Generator().manual_seed(2)
    batch, height, width = 3, 16, 16
    mask = cutmix_masks(batch, height, width, prob=1., generator=gen)
    # image i is filled with value i, labels with 10 + i
    images = torch.arange(batch).float().view(batch, 1, 1, 1).expand(
        batch, 3, height, width)
    labels = (10 + torch.arange(batch)).view(batch, 1,
                                             1).expand(batch, height, width)
    mixed_img = apply_cutmix(mask, images)
    mixed_lbl = apply_cutmix(mask, labels)
    for i in range(batch):
        partner = (i + 1) % batch
        inside = mask[i]
        assert (mixed_img[i][:, inside] == partner).all()
        assert (mixed_img[i][:, ~inside] == i).all()
        assert (mixed_lbl[i][inside] == 10 + partner).all()
        assert (mixed_lbl[i][~inside] == 10 + i).all()
        # the image content and the label agree pixel by pixel
        assert (mixed_lbl[i] - 10 == mixed_img[i][0].long()).all()
    with pytest.raises(ValueError, match='shape'):
        apply_cutmix(mask, torch.zeros(batch))


def test_invalid_arguments():
    with pytest.raises(ValueError, match='area_ratio'):
        cutmix_masks(2, 4, 4, area_ratio=0.)
    with pytest.raises(ValueError, match='prob'):
        cutmix_masks(2, 4, 4, prob=1.5)
