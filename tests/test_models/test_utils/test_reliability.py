# Copyright (c) mmseg_u2pl contributors. All rights reserved.
import math

import numpy as np
import pytest
import torch

from mmseg_u2pl.models.utils.reliability import (alpha_schedule, entropy,
                                                 entropy_filtered_loss,
                                                 masked_percentile,
                                                 partition_by_entropy)


def test_alpha_schedule_linear_decay():
    # alpha_t = alpha_0 * (1 - t / T)
    assert alpha_schedule(20, 0, 100) == pytest.approx(20.)
    assert alpha_schedule(20, 25, 100) == pytest.approx(15.)
    assert alpha_schedule(20, 50, 100) == pytest.approx(10.)
    assert alpha_schedule(20, 100, 100) == pytest.approx(0.)
    assert alpha_schedule(20, 150, 100) == pytest.approx(0.)  # clipped
    with pytest.raises(ValueError, match='max_iters'):
        alpha_schedule(20, 0, 0)


def test_alpha_schedule_from_a_later_start():
    # alpha_t = alpha_0 * (1 - (t - t_0) / (T - t_0)), alpha_0 before t_0
    assert alpha_schedule(20, 0, 100, start_iter=60) == pytest.approx(20.)
    assert alpha_schedule(20, 60, 100, start_iter=60) == pytest.approx(20.)
    assert alpha_schedule(20, 70, 100, start_iter=60) == pytest.approx(15.)
    assert alpha_schedule(20, 90, 100, start_iter=60) == pytest.approx(5.)
    assert alpha_schedule(20, 100, 100, start_iter=60) == pytest.approx(0.)
    with pytest.raises(ValueError, match='start_iter=100'):
        alpha_schedule(20, 0, 100, start_iter=100)


def test_entropy_hand_computed():
    probs = torch.tensor([[1., 0., 0.], [0.5, 0.5, 0.], [1 / 3, 1 / 3, 1 / 3]])
    ent = entropy(probs, dim=1)
    assert ent.dtype == torch.float32
    torch.testing.assert_close(ent,
                               torch.tensor([0., math.log(2),
                                             math.log(3)]))
    # fp16 input is computed in float32
    ent16 = entropy(probs.half(), dim=1)
    assert ent16.dtype == torch.float32
    assert torch.isfinite(ent16).all()


@pytest.mark.parametrize('q', [0, 7.5, 20, 50, 80, 100])
def test_masked_percentile_matches_numpy(q):
    rng = np.random.default_rng(0)
    values = rng.random((3, 5, 7)).astype(np.float32)
    mask = rng.random((3, 5, 7)) > 0.3
    expected = np.percentile(values[mask], q)
    got = masked_percentile(
        torch.from_numpy(values), torch.from_numpy(mask), q)
    assert got.item() == pytest.approx(float(expected), abs=1e-6)


def test_masked_percentile_empty_mask_is_zero():
    values = torch.rand(4, 4)
    got = masked_percentile(values, torch.zeros(4, 4, dtype=torch.bool), 50)
    assert got.item() == 0.


def test_partition_by_entropy_small_tensor():
    # 10 valid pixels with entropies 0..9, 2 invalid pixels with huge entropy
    ent = torch.tensor([[0., 1., 2., 3., 4., 5.], [6., 7., 8., 9., 100.,
                                                   100.]])
    valid = torch.ones_like(ent, dtype=torch.bool)
    valid[1, 4:] = False
    part = partition_by_entropy(ent, valid, alpha=20)
    # percentile(0..9, 20) = 1.8 ; percentile(0..9, 80) = 7.2
    assert part.low_thresh.item() == pytest.approx(1.8)
    assert part.high_thresh.item() == pytest.approx(7.2)
    assert part.reliable_mask.flatten().tolist() == [
        True, True, False, False, False, False, False, False, False, False,
        False, False
    ]
    assert part.unreliable_mask.flatten().tolist() == [
        False, False, False, False, False, False, False, False, True, True,
        False, False
    ]
    # alpha = 0: only the extreme pixels
    part0 = partition_by_entropy(ent, valid, alpha=0)
    assert part0.reliable_mask.sum().item() == 1
    assert part0.unreliable_mask.sum().item() == 1


def test_entropy_filtered_loss_hand_computed():
    """Kept pixels: valid and not in the top-alpha entropy; Eq. 8 weight.

    ``L_u = mean_kept(CE) * all / kept``: the mean over kept pixels divided
    by the kept fraction (``all`` counts the padding too).
    """
    # one image, 2 x 2 pixels, 2 classes; pixel (1, 1) is padding
    logits = torch.tensor([[[[2., 0.], [0., 1.]], [[0., 1.], [3., 5.]]]])
    pseudo = torch.tensor([[[0, 1], [1, 1]]])
    ent = torch.tensor([[[0.1, 0.9], [0.2, 0.0]]])
    valid = torch.tensor([[[True, True], [True, False]]])
    # valid entropies 0.1, 0.9, 0.2: the 50th percentile is 0.2, so with
    # alpha = 50 the pixels with H >= 0.2 are unreliable: (0, 1), (1, 0)
    loss, partition, kept = entropy_filtered_loss(logits, pseudo, ent, valid,
                                                  50.)
    assert kept.tolist() == [[[True, False], [False, False]]]
    assert partition.unreliable_mask.tolist() == [[[False, True],
                                                   [True, False]]]
    # CE of pixel (0, 0), label 0, logits (2, 0): mean over 1 kept pixel,
    # times all / kept = 4 / 1 (a sum over all 4 pixels would give CE / 4)
    expected = (math.log(math.exp(2.) + 1.) - 2.) * 4
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # alpha = 0 still drops the pixels AT the maximum entropy (H >= the
    # 100th percentile, as in the reference): (0, 1) here
    loss0, _, kept0 = entropy_filtered_loss(logits, pseudo, ent, valid, 0.)
    assert kept0.tolist() == [[[True, False], [True, False]]]
    ce = [math.log(math.exp(2.) + 1.) - 2., math.log(1. + math.exp(3.)) - 3.]
    # mean over the 2 kept pixels times 4 / 2
    assert loss0.item() == pytest.approx(sum(ce) / 2 * 2, abs=1e-6)
    # nothing kept: 0, not NaN
    none_valid = torch.zeros_like(valid)
    loss_none, _, kept_none = entropy_filtered_loss(logits, pseudo, ent,
                                                    none_valid, 20.)
    assert not kept_none.any()
    assert loss_none.item() == 0.
