# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""``OHEMCrossEntropyLoss``: the mean cross-entropy over the kept pixels."""
import math

import pytest
import torch
from mmseg.models.losses import CrossEntropyLoss
from mmseg.registry import MODELS
from mmseg.structures import build_pixel_sampler

import mmseg_u2pl  # noqa: F401  (registers the loss)


def test_mean_over_the_kept_pixels_by_hand():
    # one image, 1 x 4 pixels, 2 classes; labels 0, 1, 0, 255 (ignored)
    logits = torch.tensor([[[[2., 0., 0., 1.]], [[0., 0., 1., 0.]]]])
    label = torch.tensor([[[0, 1, 0, 255]]])
    weight = torch.tensor([[[1., 0., 1., 0.]]])  # pixels 0 and 2 kept
    loss = MODELS.build(dict(type='OHEMCrossEntropyLoss'))(
        logits, label, weight=weight, ignore_index=255)
    ce0 = math.log(math.exp(2.) + 1.) - 2.  # label 0, logits (2, 0)
    ce2 = math.log(1. + math.exp(1.))  # label 0, logits (0, 1)
    assert loss.item() == pytest.approx((ce0 + ce2) / 2, rel=1e-6)
    # mmseg's CrossEntropyLoss averages over all 4 pixels instead
    plain = CrossEntropyLoss()(logits, label, weight=weight, ignore_index=255)
    assert plain.item() == pytest.approx((ce0 + ce2) / 4, rel=1e-6)
    # loss_weight scales it; nothing kept gives 0
    double = MODELS.build(dict(type='OHEMCrossEntropyLoss', loss_weight=2.))
    assert double(
        logits, label, weight=weight,
        ignore_index=255).item() == pytest.approx(
            ce0 + ce2, rel=1e-6)
    none = double(
        logits, label, weight=torch.zeros_like(weight), ignore_index=255)
    assert none.item() == 0.


def test_without_weights_it_is_mmseg_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=gen)
    label = torch.randint(3, (2, 4, 4), generator=gen)
    ohem = MODELS.build(dict(type='OHEMCrossEntropyLoss'))
    assert torch.equal(ohem(logits, label), CrossEntropyLoss()(logits, label))


def test_with_mmseg_ohem_sampler():
    """The sampler's kept set (p < max(thresh, p_k)), then the kept mean."""
    gen = torch.Generator().manual_seed(1)
    logits = 2 * torch.randn(2, 4, 8, 8, generator=gen)
    label = torch.randint(4, (2, 1, 8, 8), generator=gen)
    label[0, 0, :2] = 255
    sampler = build_pixel_sampler(
        dict(type='OHEMPixelSampler', thresh=0.7, min_kept=10),
        context=type('Head', (), dict(ignore_index=255))())
    weight = sampler.sample(logits, label)
    label = label[:, 0]
    # by hand: probability of the label, the k = 10 x 2 images smallest
    prob = logits.softmax(1).gather(1, label.clamp(max=3)[:, None])[:, 0]
    valid = label != 255
    k_th = prob[valid].sort().values[20]
    kept = valid & (prob < max(k_th.item(), 0.7))
    assert torch.equal(weight.bool(), kept)
    ce = torch.nn.functional.cross_entropy(
        logits, label, ignore_index=255, reduction='none')
    loss = MODELS.build(dict(type='OHEMCrossEntropyLoss'))(
        logits, label, weight=weight, ignore_index=255)
    assert loss.item() == pytest.approx(ce[kept].mean().item(), rel=1e-5)


def test_sigmoid_is_refused():
    with pytest.raises(ValueError, match='use_sigmoid'):
        MODELS.build(dict(type='OHEMCrossEntropyLoss', use_sigmoid=True))
