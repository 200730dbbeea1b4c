# Copyright (c) mmseg_u2pl contributors. All rights reserved.
import math

import pytest
import torch

from mmseg_u2pl.models.losses.contrastive_loss import (
    UnreliableContrastiveLoss, _nonzero_of_size, anchor_candidate_mask,
    class_ranks, negative_candidate_mask)

IGNORE = 255


def build_loss(**kwargs):
    args = dict(
        num_classes=2,
        feat_channels=3,
        memory_size=16,
        num_anchors=None,
        num_negatives=4,
        temperature=0.5,
        delta_p=0.3,
        rank_low=0,
        rank_high=2,
        loss_weight=0.1)
    args.update(kwargs)
    return UnreliableContrastiveLoss(**args)


def as_maps(pixels):
    """``(P, K)`` per-pixel rows -> ``(1, K, 1, P)`` maps (one image)."""
    return pixels.t().reshape(1, pixels.shape[1], 1, pixels.shape[0])


def infonce(s_pos, s_negs, tau):
    """-log(e^{s+/tau} / (e^{s+/tau} + sum_j e^{s-_j/tau})), in float64."""
    pos = math.exp(s_pos / tau)
    return -math.log(pos / (pos + sum(math.exp(s / tau) for s in s_negs)))


def cosine(a, b):
    a, b = a.double(), b.double()
    return float(a @ b / (a.norm() * b.norm()))


# ----------------------------------------------------------------------
# masks


def test_class_ranks():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.25, 0.25, 0.5]])
    assert class_ranks(probs).tolist() == [[2, 0, 1], [0, 2, 1], [1, 2, 0]]


def test_anchor_candidate_mask():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.25, 0.75], [0.6, 0.4],
                          [0.5, 0.5]])
    labels = torch.tensor([0, 1, 0, 0, 1])
    reliable = torch.tensor([True, True, True, False, True])
    mask = anchor_candidate_mask(probs, labels, reliable, delta_p=0.3)
    # pixel 2: label 0 but p[0] = 0.25 <= 0.3; pixel 3: not reliable
    assert mask.tolist() == [[True, False], [False, True], [False, False],
                             [False, False], [False, True]]


def test_negative_candidate_mask():
    probs = torch.tensor([
        [0.5, 0.3, 0.1, 0.06, 0.04],  # ranks 0 1 2 3 4
        [0.1, 0.2, 0.4, 0.05, 0.25],  # ranks 3 2 0 4 1
        [0.1, 0.2, 0.4, 0.05, 0.25],
        [0.1, 0.2, 0.4, 0.05, 0.25],
        [0.1, 0.2, 0.4, 0.05, 0.25],
    ])
    labels = torch.tensor([0, 2, 2, 2, 2])
    labeled = torch.tensor([True, True, False, False, False])
    unreliable = torch.tensor([False, False, True, False, False])
    mask = negative_candidate_mask(
        probs, labels, labeled, unreliable, rank_low=2, rank_high=4)
    assert mask.tolist() == [
        # labeled, label 0: classes ranked < 2 other than 0 -> {1}
        [False, True, False, False, False],
        # labeled, label 2: classes ranked < 2 are {2, 4}, minus 2 -> {4}
        [False, False, False, False, True],
        # unlabeled unreliable: classes ranked 2 or 3 -> {1, 0}
        [True, True, False, False, False],
        # unlabeled, not unreliable; invalid labeled pixel (pixel 4)
        [False] * 5,
        [False] * 5,
    ]
    # rank_high is clipped to C: ranks 2..4 -> {1, 0, 3}
    clipped = negative_candidate_mask(
        probs, labels, labeled, unreliable, rank_low=2, rank_high=20)
    assert clipped[2].tolist() == [True, True, False, True, False]


def four_pixel_case():
    """Two images of 4 pixels: labeled (pixel 2 ignored), then unlabeled
    with entropies increasing from pixel 4 to pixel 7."""
    labels = torch.tensor([[[0, 2, IGNORE, 3]], [[0, 1, 2, 0]]])
    probs = torch.tensor([
        [0.1, 0.7, 0.1, 0.1],
        [0.05, 0.05, 0.8, 0.1],
        [0.4, 0.3, 0.2, 0.1],
        [0.6, 0.2, 0.1, 0.1],
        [0.97, 0.01, 0.01, 0.01],  # ranks 0 1 2 3 (ties: lower id first)
        [0.1, 0.85, 0.03, 0.02],  # ranks 1 0 2 3
        [0.05, 0.05, 0.8, 0.1],  # ranks 2 3 0 1
        [0.3, 0.28, 0.22, 0.2],  # ranks 0 1 2 3
    ]).reshape(2, 1, 4, 4).permute(0, 3, 1, 2)
    return labels, probs


def test_pixel_masks_follow_the_entropy_partition():
    loss = build_loss(num_classes=4, rank_low=1, rank_high=3)
    labels, probs = four_pixel_case()
    masks = loss._pixel_masks(probs, labels, num_labeled=1, alpha=25.)
    # alpha 25 over 4 unlabeled pixels: lowest entropy reliable, highest
    # unreliable; all valid labeled pixels reliable
    reliable = masks['reliable_onehot'].any(dim=1)
    assert reliable.tolist() == [
        True, True, False, True, True, False, False, False
    ]
    assert masks['anchor_mask'].nonzero().tolist() == [[1, 2], [4, 0]]
    # labeled pixel 0 (top class 1 != label 0) -> class 1; pixel 3 -> 0;
    # unreliable pixel 7 (ranks 0 1 2 3) -> classes ranked 1 and 2
    assert masks['negative_mask'].nonzero().tolist() == [[0, 1], [3, 0],
                                                         [7, 1], [7, 2]]


# labeled negatives (pixel 0 -> class 1, pixel 3 -> class 0) are the same
# for every source; an unlabeled source pixel adds its classes of rank 1-2
LABELED_NEGATIVES = [[0, 1], [3, 0]]
UNLABELED_NEGATIVES = {
    4: [[4, 1], [4, 2]],
    5: [[5, 0], [5, 2]],
    6: [[6, 0], [6, 3]],
    7: [[7, 1], [7, 2]]
}


@pytest.mark.parametrize(
    'source, pixels',
    [
        ('unreliable', [7]),  # the highest-entropy 25 %: the paper
        ('reliable', [4]),  # the lowest-entropy 25 %
        ('all', [4, 5, 6, 7]),  # every valid unlabeled pixel
    ])
def test_negative_source(source, pixels):
    labels, probs = four_pixel_case()
    loss = build_loss(
        num_classes=4, rank_low=1, rank_high=3, negative_source=source)
    masks = loss._pixel_masks(probs, labels, num_labeled=1, alpha=25.)
    expected = LABELED_NEGATIVES + sum(
        (UNLABELED_NEGATIVES[p] for p in pixels), [])
    assert masks['negative_mask'].nonzero().tolist() == expected
    # the source changes only the negatives
    default = build_loss(
        num_classes=4, rank_low=1, rank_high=3)._pixel_masks(
            probs, labels, num_labeled=1, alpha=25.)
    for key in ('reliable_onehot', 'anchor_mask'):
        assert torch.equal(masks[key], default[key])
    # and what the forward pass pushes into the bank
    feats = torch.randn(2, 3, 1, 4)
    _, log_vars = loss(feats.clone().requires_grad_(), feats, probs, labels, 1,
                       25.)
    assert int(log_vars['num_negative_candidates']) == len(expected)


def test_all_negative_source_skips_ignored_unlabeled_pixels():
    labels, probs = four_pixel_case()
    labels[1, 0, 1] = IGNORE  # unlabeled pixel 5
    loss = build_loss(
        num_classes=4, rank_low=1, rank_high=3, negative_source='all')
    masks = loss._pixel_masks(probs, labels, num_labeled=1, alpha=25.)
    assert masks['negative_mask'].nonzero().tolist() == (
        LABELED_NEGATIVES + UNLABELED_NEGATIVES[4] + UNLABELED_NEGATIVES[6] +
        UNLABELED_NEGATIVES[7])


# ----------------------------------------------------------------------
# the loss value


def single_anchor_case(loss, num_negatives, s_pos, s_neg):
    """One class-0 anchor with a known positive and negative similarity.

    The anchor is ``2 * e0``; the prototype of class 0 is the teacher
    feature of the anchor pixel, at cosine ``s_pos``; the bank of class 0
    holds ``num_negatives`` vectors at cosine ``s_neg`` (different norms).
    Class 1 has an anchor too but an empty bank, so it does not count.
    """
    sin_pos, sin_neg = math.sqrt(1 - s_pos**2), math.sqrt(1 - s_neg**2)
    negatives = torch.tensor([[s_neg, 0., sin_neg]]) * torch.arange(
        1., num_negatives + 1).unsqueeze(1)
    loss.memory_bank.push(
        torch.zeros(num_negatives, dtype=torch.long), negatives)
    student = as_maps(torch.tensor([[2., 0., 0.], [0.3, -1., 0.2]]))
    teacher = as_maps(
        torch.tensor([[3 * s_pos, 3 * sin_pos, 0.], [1., 1., 1.]]))
    probs = as_maps(torch.tensor([[0.9, 0.1], [0.2, 0.8]]))
    labels = torch.tensor([[[0, 1]]])
    return student.requires_grad_(), teacher, probs, labels


@pytest.mark.parametrize('num_anchors', [None, 7])
def test_single_anchor_matches_infonce(num_anchors):
    loss = build_loss(num_negatives=5, num_anchors=num_anchors)
    inputs = single_anchor_case(loss, 5, s_pos=0.6, s_neg=-0.2)
    value, log_vars = loss(*inputs, num_labeled=1, alpha=20.)
    expected = 0.1 * infonce(0.6, [-0.2] * 5, tau=0.5)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, abs=1e-5)
    assert log_vars['num_classes_used'].item() == 1
    assert log_vars['num_anchors'].item() == (num_anchors or 1)
    assert log_vars['num_negative_candidates'].item() == 0
    value.backward()
    assert inputs[0].grad[0, :, 0, 0].abs().sum() > 0
    # class 1's anchor has an empty bank: no gradient reaches it
    assert inputs[0].grad[0, :, 0, 1].abs().sum() == 0


def test_bank_larger_than_needed_and_temperature():
    # ten entries at the same cosine: which ones are drawn does not matter
    loss = build_loss(num_negatives=3, temperature=0.1, loss_weight=1.)
    inputs = single_anchor_case(loss, 10, s_pos=0.9, s_neg=0.3)
    value, _ = loss(*inputs, num_labeled=1, alpha=20.)
    expected = infonce(0.9, [0.3] * 3, tau=0.1)
    assert value.item() == pytest.approx(expected, abs=1e-5)


def two_class_case():
    """Two classes with 2 and 3 anchors, known prototypes and negatives."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 0, 1, 1, 0, IGNORE])
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.1, 0.9],
                          [0.4, 0.6], [0.2, 0.8], [0.5, 0.5]])
    student = torch.randn(7, 3, generator=generator)
    teacher = torch.randn(7, 3, generator=generator)
    teacher[6] = 100.  # ignored pixel: must not move any prototype
    bank_rows = torch.randn(2, 3, generator=generator)
    return labels, probs, student, teacher, bank_rows


def expected_two_class_loss(labels, probs, student, teacher, bank_rows, num,
                            tau, weight):
    per_class = []
    for c in range(2):
        members = (labels == c).nonzero().flatten().tolist()
        prototype = teacher[members].double().mean(0)
        anchors = [i for i in members if probs[i, c] > 0.3]
        losses = [
            infonce(
                cosine(student[i], prototype),
                [cosine(student[i], bank_rows[c])] * num, tau) for i in anchors
        ]
        per_class.append(sum(losses) / len(losses))
    return weight * sum(per_class) / len(per_class)


def test_mean_over_anchors_then_over_classes():
    labels, probs, student, teacher, bank_rows = two_class_case()
    loss = build_loss(num_negatives=4, loss_weight=0.1)
    loss.memory_bank.push(
        torch.tensor([0] * 4 + [1] * 4), bank_rows.repeat_interleave(4, 0))
    value, log_vars = loss(
        as_maps(student).requires_grad_(),
        as_maps(teacher),
        as_maps(probs),
        labels.reshape(1, 1, -1),
        num_labeled=1,
        alpha=20.)
    # pixel 5 (class 0, p = 0.2) is no anchor but enters the prototype
    expected = expected_two_class_loss(labels, probs, student, teacher,
                                       bank_rows, 4, 0.5, 0.1)
    assert value.item() == pytest.approx(expected, abs=1e-5)
    assert log_vars['num_anchors'].item() == 5
    assert log_vars['num_classes_used'].item() == 2


def test_pixels_spread_over_images_give_the_same_loss():
    """Anchors and prototypes come from the right image of a batch."""
    labels, probs, student, teacher, bank_rows = two_class_case()
    # an 8th pixel (ignored) so that the 8 pixels form 2 images of 1 x 4
    labels = torch.cat([labels, torch.tensor([IGNORE])])
    probs = torch.cat([probs, torch.tensor([[0.5, 0.5]])])
    student = torch.cat([student, torch.full((1, 3), -50.)])
    teacher = torch.cat([teacher, torch.full((1, 3), 100.)])

    def as_two_images(pixels):
        return pixels.t().reshape(pixels.shape[1], 2, 1,
                                  4).permute(1, 0, 2, 3).contiguous()

    loss = build_loss(num_negatives=4, loss_weight=0.1)
    loss.memory_bank.push(
        torch.tensor([0] * 4 + [1] * 4), bank_rows.repeat_interleave(4, 0))
    student_maps = as_two_images(student).requires_grad_()
    value, log_vars = loss(
        student_maps,
        as_two_images(teacher),
        as_two_images(probs),
        labels.reshape(2, 1, 4),
        num_labeled=2,
        alpha=20.)
    expected = expected_two_class_loss(labels[:7], probs[:7], student[:7],
                                       teacher[:7], bank_rows, 4, 0.5, 0.1)
    assert value.item() == pytest.approx(expected, abs=1e-5)
    assert log_vars['num_anchors'].item() == 5
    # the gradient reaches exactly the anchors: pixels 0-4 (not 5, 6, 7)
    value.backward()
    touched = student_maps.grad.abs().sum(1).permute(1, 0, 2).reshape(-1)
    assert (touched[:5] > 0).all() and (touched[5:] == 0).all()


def test_class_weighting_differs_from_anchor_mean():
    labels, probs, student, teacher, bank_rows = two_class_case()
    loss = build_loss(num_negatives=4, loss_weight=1.)
    loss.memory_bank.push(
        torch.tensor([0] * 4 + [1] * 4), bank_rows.repeat_interleave(4, 0))
    value, _ = loss(
        as_maps(student),
        as_maps(teacher),
        as_maps(probs),
        labels.reshape(1, 1, -1),
        num_labeled=1,
        alpha=20.)
    anchors = {0: [0, 2], 1: [1, 3, 4]}
    terms = {}
    for c, members in anchors.items():
        all_members = (labels == c).nonzero().flatten().tolist()
        prototype = teacher[all_members].double().mean(0)
        terms[c] = [
            infonce(
                cosine(student[i], prototype),
                [cosine(student[i], bank_rows[c])] * 4, 0.5) for i in members
        ]
    class_mean = (sum(terms[0]) / 2 + sum(terms[1]) / 3) / 2
    anchor_mean = (sum(terms[0]) + sum(terms[1])) / 5
    assert value.item() == pytest.approx(class_mean, abs=1e-5)
    assert abs(class_mean - anchor_mean) > 1e-3


def test_prototype_momentum():
    labels, probs, student, teacher, bank_rows = two_class_case()
    loss = build_loss(prototype_momentum=0.9)
    assert {'prototype', 'prototype_initialized'} <= set(loss.state_dict())
    loss(
        as_maps(student),
        as_maps(teacher),
        as_maps(probs),
        labels.reshape(1, 1, -1),
        num_labeled=1,
        alpha=20.)
    first = torch.stack([teacher[labels == c].mean(0) for c in range(2)])
    torch.testing.assert_close(loss.prototype, first)
    # second batch: class 1 absent -> only class 0 moves
    labels_2 = torch.tensor([0, 0, 0, IGNORE, IGNORE, 0, IGNORE])
    teacher_2 = teacher + 1.
    loss(
        as_maps(student),
        as_maps(teacher_2),
        as_maps(probs),
        labels_2.reshape(1, 1, -1),
        num_labeled=1,
        alpha=20.)
    mean_2 = teacher_2[labels_2 == 0].mean(0)
    torch.testing.assert_close(loss.prototype[0],
                               0.9 * first[0] + 0.1 * mean_2)
    torch.testing.assert_close(loss.prototype[1], first[1])
    assert loss.prototype_initialized.tolist() == [True, True]


def test_momentum_prototype_is_the_positive_key():
    labels, probs, student, teacher, bank_rows = two_class_case()
    loss = build_loss(prototype_momentum=0.5, num_negatives=4, loss_weight=1.)
    loss.memory_bank.push(
        torch.tensor([0] * 4 + [1] * 4), bank_rows.repeat_interleave(4, 0))
    stored = torch.randn(2, 3, generator=torch.Generator().manual_seed(5))
    loss.prototype.copy_(stored)
    loss.prototype_initialized.fill_(True)
    value, _ = loss(
        as_maps(student),
        as_maps(teacher),
        as_maps(probs),
        labels.reshape(1, 1, -1),
        num_labeled=1,
        alpha=20.)
    batch_mean = torch.stack([teacher[labels == c].mean(0) for c in range(2)])
    prototype = 0.5 * stored + 0.5 * batch_mean
    expected = []
    for c, members in {0: [0, 2], 1: [1, 3, 4]}.items():
        expected.append(
            sum(
                infonce(
                    cosine(student[i], prototype[c]),
                    [cosine(student[i], bank_rows[c])] * 4, 0.5)
                for i in members) / len(members))
    assert value.item() == pytest.approx(sum(expected) / 2, abs=1e-5)


# ----------------------------------------------------------------------
# the memory bank inside the loss


def partition_case():
    """Labeled + unlabeled image of 4 pixels (see the pixel-mask test)."""
    labels = torch.tensor([[[0, 2, IGNORE, 3]], [[0, 1, 2, 0]]])
    probs = torch.tensor([
        [0.1, 0.7, 0.1, 0.1],
        [0.05, 0.05, 0.8, 0.1],
        [0.4, 0.3, 0.2, 0.1],
        [0.6, 0.2, 0.1, 0.1],
        [0.97, 0.01, 0.01, 0.01],
        [0.1, 0.85, 0.03, 0.02],
        [0.05, 0.05, 0.8, 0.1],
        [0.3, 0.28, 0.22, 0.2],
    ]).reshape(2, 1, 4, 4).permute(0, 3, 1, 2)
    teacher = torch.arange(8 * 3, dtype=torch.float32).reshape(2, 1, 4, 3)
    teacher = teacher.permute(0, 3, 1, 2).contiguous()
    student = torch.randn(2, 3, 1, 4, requires_grad=True)
    return student, teacher, probs, labels


def test_negative_candidates_enter_the_bank_before_sampling():
    loss = build_loss(num_classes=4, rank_low=1, rank_high=3, num_anchors=3)
    student, teacher, probs, labels = partition_case()
    value, log_vars = loss(
        student, teacher, probs, labels, num_labeled=1, alpha=25.)
    z_t = teacher.permute(0, 2, 3, 1).reshape(8, 3)

    def bank_rows(c):
        return sorted(loss.memory_bank.get(c)[:, 0].tolist())

    assert bank_rows(0) == [z_t[3, 0].item()]
    assert bank_rows(1) == sorted([z_t[0, 0].item(), z_t[7, 0].item()])
    assert bank_rows(2) == [z_t[7, 0].item()]
    assert bank_rows(3) == []
    assert log_vars['num_negative_candidates'].item() == 4
    # classes 0 and 2 have anchors and, within this same step, negatives
    assert log_vars['num_classes_used'].item() == 2
    assert log_vars['num_anchors'].item() == 6
    assert value.item() > 0
    torch.testing.assert_close(log_vars['bank_fill_mean'],
                               torch.tensor(4 / 64))
    assert log_vars['bank_fill_min'].item() == 0


def test_candidates_per_step_are_capped_by_capacity():
    loss = build_loss(
        num_classes=4, rank_low=1, rank_high=3, memory_size=[1, 1, 1, 1])
    student, teacher, probs, labels = partition_case()
    _, log_vars = loss(
        student, teacher, probs, labels, num_labeled=1, alpha=25.)
    # class 1 has two candidates and room for one: one random survivor
    assert log_vars['num_negative_candidates'].item() == 3
    assert loss.memory_bank.fill.tolist() == [1, 1, 1, 0]
    z_t = teacher.permute(0, 2, 3, 1).reshape(8, 3)
    assert loss.memory_bank.get(1)[0,
                                   0].item() in (z_t[0,
                                                     0].item(), z_t[7,
                                                                    0].item())


def test_bank_and_prototype_are_model_state():
    loss = build_loss(
        num_classes=4, rank_low=1, rank_high=3, prototype_momentum=0.9)
    student, teacher, probs, labels = partition_case()
    loss(student, teacher, probs, labels, num_labeled=1, alpha=25.)
    state = loss.state_dict()
    assert {
        'memory_bank.features', 'memory_bank.ptr', 'memory_bank.fill',
        'prototype'
    } <= set(state)
    fresh = build_loss(
        num_classes=4, rank_low=1, rank_high=3, prototype_momentum=0.9)
    fresh.load_state_dict(state)
    torch.testing.assert_close(
        fresh.memory_bank.get(1), loss.memory_bank.get(1))
    torch.testing.assert_close(fresh.prototype, loss.prototype)


# ----------------------------------------------------------------------
# edge cases


def test_fewer_than_two_classes_gives_exact_zero_and_zero_grads():
    loss = build_loss()
    loss.memory_bank.push(torch.tensor([0, 0]), torch.randn(2, 3))
    student = torch.randn(1, 3, 1, 3, requires_grad=True)
    probs = as_maps(torch.tensor([[0.9, 0.1]] * 3))
    labels = torch.tensor([[[0, 0, IGNORE]]])
    value, log_vars = loss(
        student,
        torch.randn(1, 3, 1, 3),
        probs,
        labels,
        num_labeled=1,
        alpha=20.)
    assert value.item() == 0.
    assert log_vars['num_classes_used'].item() == 0
    value.backward()
    assert student.grad is not None
    assert torch.equal(student.grad, torch.zeros_like(student))


def test_all_pixels_ignored():
    loss = build_loss(num_classes=3, rank_low=1, rank_high=3, num_anchors=4)
    student = torch.randn(2, 3, 2, 2, requires_grad=True)
    probs = torch.softmax(torch.randn(2, 3, 2, 2), dim=1)
    labels = torch.full((2, 2, 2), IGNORE)
    value, log_vars = loss(
        student,
        torch.randn(2, 3, 2, 2),
        probs,
        labels,
        num_labeled=1,
        alpha=20.)
    assert value.item() == 0.
    assert log_vars['num_negative_candidates'].item() == 0
    assert loss.memory_bank.fill.sum().item() == 0
    value.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


def test_no_bank_anywhere_gives_zero():
    labels, probs, student, teacher, _ = two_class_case()
    loss = build_loss()
    value, log_vars = loss(
        as_maps(student),
        as_maps(teacher),
        as_maps(probs),
        labels.reshape(1, 1, -1),
        num_labeled=1,
        alpha=20.)
    assert value.item() == 0.
    assert log_vars['num_classes_used'].item() == 0
    assert log_vars['num_anchors'].item() == 0


def test_sampled_anchors_come_from_candidates():
    loss = build_loss(num_classes=3, num_anchors=50)
    mask = torch.zeros(10, 3, dtype=torch.bool)
    mask[[1, 4, 7], 0] = True
    mask[9, 2] = True
    class_ids, pixels = loss._sample_anchors(mask)
    assert class_ids.tolist() == [0] * 50 + [1] * 50 + [2] * 50
    assert set(pixels[:50].tolist()) == {1, 4, 7}
    assert set(pixels[100:].tolist()) == {9}


def test_warns_when_unlabeled_negatives_cannot_exist():
    with pytest.warns(UserWarning, match='rank_low'):
        build_loss(num_classes=3, rank_low=3, rank_high=4)


@pytest.mark.parametrize('kwargs, match', [
    (dict(memory_size=[4, 4, 4]), 'memory_size'),
    (dict(memory_size=0), 'memory_size'),
    (dict(temperature=0.), 'temperature'),
    (dict(num_anchors=0), 'num_anchors'),
    (dict(num_negatives=0), 'num_negatives'),
    (dict(rank_low=2, rank_high=2), 'rank_high'),
    (dict(delta_p=1.5), 'delta_p'),
    (dict(prototype_momentum=1.), 'prototype_momentum'),
    (dict(bank_dtype='int8'), 'bank_dtype'),
    (dict(feat_channels=0), 'feat_channels'),
    (dict(negative_source='confident'), "negative_source.*'confident'"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_loss(**kwargs)


def test_bad_inputs():
    labels, probs, student, teacher, _ = two_class_case()
    loss = build_loss()
    args = [
        as_maps(student),
        as_maps(teacher),
        as_maps(probs),
        labels.reshape(1, 1, -1)
    ]
    with pytest.raises(ValueError, match='feat_channels'):
        build_loss(feat_channels=4)(*args, num_labeled=1, alpha=20.)
    with pytest.raises(ValueError, match='teacher_probs'):
        build_loss(num_classes=3, rank_high=3)(*args, num_labeled=1, alpha=20.)
    with pytest.raises(ValueError, match='num_labeled'):
        loss(*args, num_labeled=2, alpha=20.)
    bad_labels = labels.clone()
    bad_labels[0] = 7
    with pytest.raises(ValueError, match='labels contain values'):
        loss(*args[:3], bad_labels.reshape(1, 1, -1), num_labeled=1, alpha=20.)


# ----------------------------------------------------------------------
# precision


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_low_precision_inputs(dtype):
    labels, probs, student, teacher, bank_rows = two_class_case()
    reference = build_loss(num_negatives=4)
    loss = build_loss(num_negatives=4, bank_dtype='float16')
    for module in (reference, loss):
        module.memory_bank.push(
            torch.tensor([0] * 4 + [1] * 4), bank_rows.repeat_interleave(4, 0))
    expected, _ = reference(
        as_maps(student), as_maps(teacher), as_maps(probs),
        labels.reshape(1, 1, -1), 1, 20.)
    student_low = as_maps(student).to(dtype).requires_grad_()
    value, _ = loss(student_low,
                    as_maps(teacher).to(dtype),
                    as_maps(probs).to(dtype), labels.reshape(1, 1, -1), 1, 20.)
    assert loss.memory_bank.features.dtype == torch.float16
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected.item(), rel=2e-2)
    value.backward()
    assert student_low.grad.dtype == dtype
    assert torch.isfinite(student_low.grad.float()).all()


def test_under_autocast():
    labels, probs, student, teacher, bank_rows = two_class_case()
    loss = build_loss(num_negatives=4)
    loss.memory_bank.push(
        torch.tensor([0] * 4 + [1] * 4), bank_rows.repeat_interleave(4, 0))
    args = (as_maps(student), as_maps(teacher), as_maps(probs),
            labels.reshape(1, 1, -1), 1, 20.)
    expected, _ = loss(*args)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        value, _ = loss(*args)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected.item(), abs=1e-6)


def test_registered_in_mmseg_models():
    from mmseg.registry import MODELS
    loss = MODELS.build(
        dict(
            type='UnreliableContrastiveLoss',
            num_classes=21,
            memory_size=[50] + [30] * 20))
    assert isinstance(loss, UnreliableContrastiveLoss)
    assert loss.memory_bank.capacities[:2] == [50, 30]
    assert loss.loss_name == 'loss_contrast'


# ----------------------------------------------------------------------
# numerical safety: deferred state updates, non-finite features


def state_of(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_state(module, state):
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_reverted_update_leaves_bank_and_prototype_unchanged():
    student, teacher, probs, labels = partition_case()
    args = dict(num_classes=4, rank_low=1, rank_high=3, prototype_momentum=.5)

    def step(loss, shift, seed):
        torch.manual_seed(seed)
        return loss(
            student, teacher + shift, probs, labels, num_labeled=1, alpha=25.)

    loss, reference = build_loss(**args), build_loss(**args)
    step(loss, 0., seed=1)
    step(reference, 0., seed=1)
    loss.end_step(keep=True)
    before = state_of(loss)
    value, log_vars = step(loss, 1., seed=2)
    # the loss saw its own negatives: the push is written at once
    assert value.item() > 0
    assert not torch.equal(loss.prototype, before['prototype'])
    loss.end_step(keep=False)
    assert_same_state(loss, before)
    # a reverted step leaves the module as if it had never run
    step(loss, 2., seed=3)
    step(reference, 2., seed=3)
    loss.end_step(keep=True)
    assert_same_state(loss, state_of(reference))
    # class 1 has no reliable pixel in this batch
    assert loss.prototype_initialized.tolist() == [True, False, True, True]


def test_non_finite_teacher_features_never_enter_the_bank():
    loss = build_loss(num_classes=4, rank_low=1, rank_high=3, num_anchors=3)
    student, teacher, probs, labels = partition_case()
    teacher = teacher.clone()
    teacher[1, :, 0, 3] = float('nan')  # pixel 7: a negative of classes 1, 2
    _, log_vars = loss(
        student, teacher, probs, labels, num_labeled=1, alpha=25.)
    z_t = teacher.permute(0, 2, 3, 1).reshape(8, 3)
    assert loss.memory_bank.get(0)[:, 0].tolist() == [z_t[3, 0].item()]
    assert loss.memory_bank.get(1)[:, 0].tolist() == [z_t[0, 0].item()]
    assert loss.memory_bank.fill.tolist() == [1, 1, 0, 0]
    assert torch.isfinite(loss.memory_bank.features).all()
    assert log_vars['num_negative_candidates'].item() == 4


def test_nonzero_of_known_size(monkeypatch):
    """The sync-free compaction gives nonzero's rows, also in its
    fallback (torch without nonzero_static on the device) and when empty."""
    mask = torch.rand(7, 3, generator=torch.Generator().manual_seed(0)) > .5
    expected = mask.t().nonzero()
    assert expected.shape[0] > 0
    assert torch.equal(_nonzero_of_size(mask.t(), int(mask.sum())), expected)
    empty = _nonzero_of_size(torch.zeros(4, 2, dtype=torch.bool), 0)
    assert empty.shape == (0, 2) and empty.dtype == torch.long

    def unsupported(*args, **kwargs):
        raise NotImplementedError('nonzero_static: not on this backend')

    monkeypatch.setattr(torch, 'nonzero_static', unsupported)
    assert torch.equal(_nonzero_of_size(mask.t(), int(mask.sum())), expected)
