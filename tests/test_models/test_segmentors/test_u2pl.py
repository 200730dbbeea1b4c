# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""``U2PL``: the semi-supervised step, checked against hand-computed values.

Several tests replace ``decode_head.forward`` of the teacher and/or the
student by functions returning fixed logits at the crop size, so that the
pseudo-labels, the entropies, the reliable/unreliable partition and the
student's predictions are all known in advance.
"""
import copy
import math

import numpy as np
import pytest
import torch
from mmengine.optim import OptimWrapper
from toy_fixtures import one_thread  # noqa: F401  (pytest fixture)
from toy_fixtures import (build_model, make_sample, make_semi_batch,
                          set_semi, set_train_progress, set_warmup,
                          tiny_segmentor_cfg, tiny_u2pl_cfg)

pytestmark = pytest.mark.usefixtures('one_thread')

SIZE = 8  # 8x8 crops: 64 pixels per image
NUM_CLASSES = 3


def fixed_forward(logits):
    """A ``decode_head.forward`` replacement returning ``logits``."""

    def forward(inputs):
        assert inputs[0].shape[0] == logits.shape[0]
        return logits

    return forward


def one_hot_logits(labels, scales, num_classes=NUM_CLASSES):
    """Logits ``scale`` for the class ``label`` and 0 for the others."""
    logits = torch.zeros(labels.shape[0], num_classes, *labels.shape[1:])
    logits.scatter_(1, labels[:, None], scales[:, None].float())
    return logits


def entropy_of_one_hot(scale, num_classes=NUM_CLASSES):
    """Entropy of softmax([scale, 0, ..., 0]), by hand (float64)."""
    denominator = math.exp(scale) + num_classes - 1
    p_max, p_other = math.exp(scale) / denominator, 1. / denominator
    return -(
        p_max * math.log(p_max) +
        (num_classes - 1) * p_other * math.log(p_other))


def u2pl(**semi_train_cfg):
    semi_train_cfg.setdefault('cutmix', dict(prob=0.))
    model = build_model(
        tiny_u2pl_cfg(num_classes=NUM_CLASSES, **semi_train_cfg))
    model.train()
    set_semi(True)
    return model


def batch(with_unlabeled_gt=True, num_u=2, seed=0):
    return make_semi_batch(
        num_labeled=2,
        num_unlabeled=num_u,
        size=SIZE,
        num_classes=NUM_CLASSES,
        with_unlabeled_gt=with_unlabeled_gt,
        seed=seed)


def graded_teacher(pseudo_labels):
    """Teacher logits: given pseudo-labels, confidence growing with the
    flattened pixel index (1.0, 1.1, 1.2, ...): pixel ``i`` has the
    ``i``-th highest entropy of the batch."""
    num = pseudo_labels.numel()
    scales = (1. + 0.1 * torch.arange(num, dtype=torch.float64)).view(
        pseudo_labels.shape)
    return one_hot_logits(pseudo_labels, scales), scales


# ---------------------------------------------------------------------------
# config checks
# ---------------------------------------------------------------------------
def test_unknown_semi_train_cfg_keys_are_named():
    with pytest.raises(KeyError, match="'unsup_wieght'"):
        build_model(tiny_u2pl_cfg(unsup_wieght=1.))
    with pytest.raises(KeyError, match="'probability'.*semi_train_cfg.cutmix"):
        build_model(tiny_u2pl_cfg(cutmix=dict(probability=1.)))


def test_alpha_decay_start_is_checked():
    with pytest.raises(ValueError, match="alpha_decay_start.*'warmup'"):
        build_model(tiny_u2pl_cfg(alpha_decay_start='warmup'))
    # 'warmup_end' needs the warm-up length that MeanTeacherHook sets
    model = u2pl(alpha_decay_start='warmup_end')
    set_train_progress(3, 10)
    set_warmup(None)  # no MeanTeacherHook published it
    inputs, samples = batch()
    with pytest.raises(RuntimeError, match='MeanTeacherHook'):
        model.loss(inputs, samples)
    set_warmup(2)
    assert model.loss(inputs, samples)['unsup.alpha_t'].item() == \
        pytest.approx(20 * (1 - (3 - 2) / (10 - 2)))


def test_contrastive_loss_needs_a_representation_head():
    cfg = tiny_u2pl_cfg(with_contrast=True)
    del cfg['representation_head']
    with pytest.raises(ValueError, match='representation_head'):
        build_model(cfg)


def test_defaults_are_the_papers():
    model = build_model(tiny_u2pl_cfg())
    cfg = model.semi_train_cfg
    assert cfg['unsup_weight'] == 1.0 and cfg['alpha_0'] == 20.0
    assert cfg['cutmix'] == dict(prob=0.5, area_ratio=0.5, per_sample=False)
    assert cfg['ignore_index'] == 255
    assert cfg['alpha_decay_start'] == 'train_start'  # alpha_0 (1 - t / T)
    # a partial cutmix dict keeps the other defaults
    model = build_model(tiny_u2pl_cfg(cutmix=dict(prob=1.)))
    assert model.semi_train_cfg['cutmix'] == dict(
        prob=1., area_ratio=0.5, per_sample=False)


def test_contrastive_loss_and_representation_head_are_inferred():
    model = build_model(tiny_u2pl_cfg(with_contrast=True))
    # classifier input of DepthwiseSeparableASPPHead: `channels` = 16
    assert model.student.representation_head.in_channels == 16
    assert hasattr(model.teacher, 'representation_head')
    assert model.contrastive_loss.num_classes == 6
    assert model.contrastive_loss.feat_channels == 8


# ---------------------------------------------------------------------------
# warm-up
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('with_contrast', [False, True])
def test_warmup_gives_supervised_losses_only(with_contrast):
    model = build_model(tiny_u2pl_cfg(with_contrast=with_contrast))
    model.train()
    set_semi(False)
    set_train_progress(0, 10)
    inputs, samples = make_semi_batch()
    teacher_before = copy.deepcopy(model.teacher.state_dict())
    losses = model.loss(inputs, samples)
    expected = {'sup.decode.loss_ce', 'sup.decode.acc_seg'}
    if with_contrast:
        expected.add('contrast.loss_contrast')
    assert set(losses) == expected
    assert all(
        key.startswith('sup.')
        for key in expected - {'contrast.loss_contrast'})
    if with_contrast:
        zero = losses['contrast.loss_contrast']
        assert zero.item() == 0. and zero.requires_grad
        loss, _ = model.parse_losses(losses)
        loss.backward()
        # the representation head is in the graph (DDP sees its gradient)
        for param in model.student.representation_head.parameters():
            assert param.grad is not None
            assert torch.count_nonzero(param.grad) == 0
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key


@pytest.mark.parametrize('with_contrast', [False, True])
def test_warmup_steps_equal_plain_supervised_training(with_contrast):
    """During the warm-up the student's weights follow exactly the steps of
    the same segmentor trained alone on the same labeled batches (same
    dropout draws, same SGD): the warm-up is plain mmseg training."""
    semi = build_model(tiny_u2pl_cfg(with_contrast=with_contrast))
    plain = build_model(tiny_segmentor_cfg())
    semi.student.load_state_dict(plain.state_dict(), strict=False)
    initial = copy.deepcopy(plain.state_dict())
    sgd = dict(lr=0.01, momentum=0.9, weight_decay=5e-4)
    wrappers = [
        OptimWrapper(torch.optim.SGD(model.parameters(), **sgd))
        for model in (semi, plain)
    ]
    semi.train()
    plain.train()
    set_semi(False)
    for step in range(3):
        set_train_progress(step, 10)
        inputs, samples = make_semi_batch(seed=step)
        torch.manual_seed(step)
        loss_semi, _ = semi.parse_losses(semi.loss(inputs, samples))
        torch.manual_seed(step)
        loss_plain, _ = plain.parse_losses(
            plain.loss(inputs['labeled'], samples['labeled']))
        assert torch.equal(loss_semi, loss_plain)
        wrappers[0].update_params(loss_semi)
        wrappers[1].update_params(loss_plain)
    student = semi.student.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(student[key], value), key
    key = 'decode_head.conv_seg.weight'
    assert not torch.equal(student[key], initial[key])  # it trained


def test_loss_without_the_hook_is_an_error():
    model = build_model(tiny_u2pl_cfg())
    set_train_progress(0, 10)
    inputs, samples = make_semi_batch()
    with pytest.raises(RuntimeError, match='MeanTeacherHook'):
        model.loss(inputs, samples)


# ---------------------------------------------------------------------------
# the unsupervised loss, by hand
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('unsup_weight', [1.0, 2.5])
def test_unsupervised_loss_is_the_kept_mean_times_all_over_kept(unsup_weight):
    model = u2pl(alpha_0=25., unsup_weight=unsup_weight)
    set_train_progress(0, 100)  # alpha_t = 25 * (1 - 0 / 100) = 25 %
    inputs, samples = batch()
    num_l, num_u = 2, 2
    num_pixels = num_u * SIZE * SIZE  # 128

    pseudo = (torch.arange(num_pixels) % NUM_CLASSES).view(num_u, SIZE, SIZE)
    teacher_logits, scales = graded_teacher(pseudo)
    gen = torch.Generator().manual_seed(1)
    student_logits = torch.randn(
        num_l + num_u, NUM_CLASSES, SIZE, SIZE, generator=gen)
    student_logits.requires_grad_(True)
    model.teacher.decode_head.forward = fixed_forward(teacher_logits)
    model.student.decode_head.forward = fixed_forward(student_logits)

    losses = model.loss(inputs, samples)

    # By hand: entropy falls with the pixel index, so the 25 % = 32 pixels
    # of highest entropy are pixels 0..31 (numpy's percentile 75 lies
    # between the 96th and 97th smallest entropies). The other 96 are kept.
    ent = np.array([entropy_of_one_hot(s) for s in scales.flatten().tolist()])
    unreliable = ent >= np.percentile(ent, 75)
    assert unreliable.sum() == 32 and unreliable[:32].all()
    logits_u = student_logits[num_l:].detach().double().permute(
        0, 2, 3, 1).reshape(-1, NUM_CLASSES).numpy()
    labels = pseudo.flatten().numpy()
    total = 0.
    for i in range(32, num_pixels):
        row = logits_u[i]
        log_prob = row[labels[i]] - math.log(np.exp(row).sum())
        total += -log_prob
    # paper Eq. 8: the mean over the 96 kept pixels, weighted by
    # lambda_u = eta * all / kept = unsup_weight * 128 / 96
    expected = unsup_weight * (total / 96) * (num_pixels / 96)
    assert losses['unsup.loss_ce'].item() == pytest.approx(expected, rel=1e-5)
    # neither the plain mean over kept pixels nor the sum over all pixels
    for other in (total / 96, total / num_pixels):
        assert losses['unsup.loss_ce'].item() != pytest.approx(
            unsup_weight * other, rel=1e-3)
    assert losses['unsup.alpha_t'].item() == pytest.approx(25.)
    assert losses['unsup.reliable_ratio'].item() == pytest.approx(0.75)
    assert losses['unsup.entropy_thresh'].item() == pytest.approx(
        np.percentile(ent, 75), rel=1e-4)
    # the unsupervised loss reaches the student's unlabeled logits only
    losses['unsup.loss_ce'].backward()
    grad = student_logits.grad
    assert torch.count_nonzero(grad[:num_l]) == 0
    grad_u = grad[num_l:].permute(0, 2, 3, 1).reshape(-1, NUM_CLASSES)
    assert torch.count_nonzero(grad_u[:32]) == 0  # unreliable: ignored
    assert (grad_u[32:].abs().sum(1) > 0).all()


def test_alpha_t_follows_the_schedule():
    model = u2pl(alpha_0=20.)
    set_train_progress(30, 40)  # 20 * (1 - 30 / 40) = 5
    inputs, samples = batch()
    losses = model.loss(inputs, samples)
    assert losses['unsup.alpha_t'].item() == pytest.approx(5.)


def test_padding_is_never_a_pseudo_label_target():
    model = u2pl(alpha_0=1e-6)  # (almost) nothing unreliable
    set_train_progress(0, 10)
    inputs, samples = batch()
    # unlabeled image 1 is 6x5 inside the 8x8 batch: the rest is padding
    samples['unlabeled'][1] = make_sample(None, (SIZE, SIZE), (6, 5))
    teacher_logits, _ = graded_teacher(
        torch.zeros(2, SIZE, SIZE, dtype=torch.long))
    model.teacher.decode_head.forward = fixed_forward(teacher_logits)
    losses = model.loss(inputs, samples)
    record = model.last_pseudo_labels
    valid = record['valid_mask']
    assert valid[0].all()
    assert valid[1, :6, :5].all() and valid[1].sum() == 30
    assert not (record['reliable_mask'] & ~valid).any()
    # 64 + 30 valid pixels of distinct entropies; the highest-entropy one
    # (pixel 0 of image 0) is dropped
    assert losses['unsup.reliable_ratio'].item() == pytest.approx(93 / 94)
    assert not record['reliable_mask'][0, 0, 0]
    assert int(record['reliable_mask'].sum()) == 93


# ---------------------------------------------------------------------------
# CutMix inside the step
# ---------------------------------------------------------------------------
def test_cutmix_mixes_images_pseudo_labels_and_entropy_with_the_same_box():
    model = u2pl(cutmix=dict(prob=1.))
    set_train_progress(0, 10)
    inputs, samples = batch()
    # unlabeled image 0 is all -1, image 1 all +1
    inputs['unlabeled'] = torch.stack(
        [torch.full((3, SIZE, SIZE), -1.),
         torch.full((3, SIZE, SIZE), 1.)])
    # the teacher says class 1 (weakly) on image 0, class 2 (confidently)
    # on image 1
    labels = torch.stack([
        torch.full((SIZE, SIZE), 1, dtype=torch.long),
        torch.full((SIZE, SIZE), 2, dtype=torch.long)
    ])
    scales = torch.stack(
        [torch.full((SIZE, SIZE), 1.),
         torch.full((SIZE, SIZE), 6.)])
    model.teacher.decode_head.forward = fixed_forward(
        one_hot_logits(labels, scales))
    # record what the student sees
    seen = []
    extract_feat = model.student.extract_feat

    def recording_extract_feat(images):
        seen.append(images.detach().clone())
        return extract_feat(images)

    model.student.extract_feat = recording_extract_feat
    model.loss(inputs, samples)
    record = model.last_pseudo_labels
    assert set(record) == {
        'inputs', 'pseudo_label', 'entropy', 'reliable_mask', 'valid_mask'
    }
    # the student ran once on [labeled; mixed unlabeled]
    assert len(seen) == 1
    assert torch.equal(seen[0][:2], inputs['labeled'])
    assert torch.equal(seen[0][2:], record['inputs'])
    for i, partner in ((0, 1), (1, 0)):  # image i takes (i + 1) mod 2
        own_value = inputs['unlabeled'][i, 0, 0, 0]
        box = record['inputs'][i, 0] != own_value
        # half of the image area (rounded box sides)
        assert 24 <= int(box.sum()) <= 40
        assert (record['inputs'][i][:,
                                    box] == inputs['unlabeled'][partner, 0, 0,
                                                                0]).all()
        # a box: the pasted pixels form a rectangle
        rows, cols = box.any(1).nonzero(), box.any(0).nonzero()
        assert int(box.sum()) == len(rows) * len(cols)
        pseudo = record['pseudo_label'][i]
        assert (pseudo[box] == labels[partner, 0, 0]).all()
        assert (pseudo[~box] == labels[i, 0, 0]).all()
        ent = record['entropy'][i]
        torch.testing.assert_close(
            ent[box],
            torch.full_like(ent[box],
                            entropy_of_one_hot(float(scales[partner, 0, 0]))))
        torch.testing.assert_close(
            ent[~box],
            torch.full_like(ent[~box],
                            entropy_of_one_hot(float(scales[i, 0, 0]))))


def test_cutmix_is_off_with_probability_zero():
    model = u2pl(cutmix=dict(prob=0.))
    set_train_progress(0, 10)
    inputs, samples = batch()
    model.loss(inputs, samples)
    record = model.last_pseudo_labels
    assert record['inputs'].shape[0] == 2  # the whole unlabeled batch
    assert torch.equal(record['inputs'], inputs['unlabeled'])
    # every step replaces the record
    inputs['unlabeled'] = inputs['unlabeled'] + 1.
    model.loss(inputs, samples)
    assert torch.equal(model.last_pseudo_labels['inputs'],
                       inputs['unlabeled'])


# ---------------------------------------------------------------------------
# diagnostics and unlabeled ground truth
# ---------------------------------------------------------------------------
def test_pseudo_label_accuracy_is_hand_computed():
    model = u2pl(alpha_0=25.)
    set_train_progress(0, 100)
    inputs, samples = batch()
    # pseudo-labels: class 1 on image 0, class 2 on image 1; pixel i of the
    # flattened batch is the i-th most uncertain: pixels 0..31 unreliable
    pseudo = torch.stack([
        torch.full((SIZE, SIZE), 1, dtype=torch.long),
        torch.full((SIZE, SIZE), 2, dtype=torch.long)
    ])
    teacher_logits, _ = graded_teacher(pseudo)
    model.teacher.decode_head.forward = fixed_forward(teacher_logits)
    # ground truth of image 0 (flattened): 0..15 ignored, 16..39 class 1
    # (correct), 40..63 class 0 (wrong); image 1 all correct
    gt0 = torch.zeros(SIZE * SIZE, dtype=torch.long)
    gt0[:16] = 255
    gt0[16:40] = 1
    gt1 = torch.full((SIZE * SIZE, ), 2, dtype=torch.long)
    samples['unlabeled'] = [
        make_sample(gt0.view(SIZE, SIZE), (SIZE, SIZE)),
        make_sample(gt1.view(SIZE, SIZE), (SIZE, SIZE))
    ]
    losses = model.loss(inputs, samples)
    # known pixels: 128 - 16 = 112; correct: 24 + 64 = 88
    assert losses['unsup.pseudo_acc'].item() == pytest.approx(88 / 112)
    # reliable (kept) pixels 32..127: known 96, correct 8 + 64 = 72
    assert losses['unsup.pseudo_acc_reliable'].item() == pytest.approx(72 / 96)
    assert 'loss' not in 'unsup.pseudo_acc'  # never summed into the loss


def test_pseudo_label_accuracy_uses_the_cutmix_boxes():
    model = u2pl(cutmix=dict(prob=1.))
    set_train_progress(0, 10)
    inputs, samples = batch()
    labels = torch.stack([
        torch.full((SIZE, SIZE), 1, dtype=torch.long),
        torch.full((SIZE, SIZE), 2, dtype=torch.long)
    ])
    model.teacher.decode_head.forward = fixed_forward(
        one_hot_logits(labels, torch.full((2, SIZE, SIZE), 3.)))
    # the ground truth equals the teacher before mixing: after mixing both
    # with the same boxes the accuracy is exactly 1
    samples['unlabeled'] = [make_sample(lbl, (SIZE, SIZE)) for lbl in labels]
    losses = model.loss(inputs, samples)
    assert losses['unsup.pseudo_acc'].item() == 1.


def test_no_accuracy_without_unlabeled_ground_truth():
    model = u2pl()
    set_train_progress(0, 10)
    inputs, samples = batch(with_unlabeled_gt=False)
    losses = model.loss(inputs, samples)
    assert 'unsup.loss_ce' in losses
    assert not any('pseudo_acc' in key for key in losses)


def test_unlabeled_ground_truth_never_changes_a_loss():
    model = build_model(
        tiny_u2pl_cfg(with_contrast=True, cutmix=dict(prob=1.)))
    model.train()
    set_semi(True)
    set_train_progress(3, 10)
    inputs, with_gt = make_semi_batch(with_unlabeled_gt=True, seed=3)
    _, without_gt = make_semi_batch(with_unlabeled_gt=False, seed=3)
    results = []
    for samples in (with_gt, without_gt):
        clone = copy.deepcopy(model)
        torch.manual_seed(0)
        losses = clone.loss(inputs, samples)
        loss, _ = clone.parse_losses(losses)
        loss.backward()
        grads = {
            name: p.grad.clone()
            for name, p in clone.student.named_parameters()
            if p.grad is not None
        }
        results.append((losses, grads, clone.state_dict()))
    (losses_a, grads_a, state_a), (losses_b, grads_b, state_b) = results
    assert 'unsup.pseudo_acc' in losses_a
    assert 'unsup.pseudo_acc' not in losses_b
    assert set(losses_a) - set(losses_b) == {
        'unsup.pseudo_acc', 'unsup.pseudo_acc_reliable'
    }
    for key in losses_b:
        assert torch.equal(losses_a[key], losses_b[key]), key
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name
    for key in state_a:  # memory bank included
        assert torch.equal(state_a[key], state_b[key]), key


# ---------------------------------------------------------------------------
# gradients and the optimizer
# ---------------------------------------------------------------------------
def test_teacher_gets_no_gradient_and_is_unchanged_by_a_step():
    model = build_model(
        tiny_u2pl_cfg(with_contrast=True, cutmix=dict(prob=1.)))
    model.train()
    set_semi(True)
    set_train_progress(5, 10)
    inputs, samples = make_semi_batch()
    teacher_before = copy.deepcopy(model.teacher.state_dict())
    student_before = copy.deepcopy(model.student.state_dict())
    # every parameter goes to the optimizer, the teacher's too
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    losses = model.loss(inputs, samples)
    assert {'sup.decode.loss_ce', 'unsup.loss_ce',
            'contrast.loss_contrast'} <= set(losses)
    loss, _ = model.parse_losses(losses)
    loss.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(p.grad is not None for p in model.student.parameters())
    optimizer.step()
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    changed = [
        key for key, value in model.student.state_dict().items()
        if not torch.equal(value, student_before[key])
    ]
    assert any('conv_seg' in key for key in changed)
    assert any('representation_head' in key for key in changed)


def test_train_step_through_the_data_preprocessor():
    model = build_model(tiny_u2pl_cfg(cutmix=dict(prob=1.)))
    model.train()
    set_semi(True)
    set_train_progress(1, 10)
    gen = torch.Generator().manual_seed(0)

    def packed(num, with_gt):
        _, samples = make_semi_batch(num, 1, size=32)
        if not with_gt:
            for sample in samples['labeled']:
                del sample.gt_sem_seg
        return dict(
            inputs=[
                torch.randint(
                    0, 256, (3, 32, 32), generator=gen, dtype=torch.uint8)
                for _ in range(num)
            ],
            data_samples=samples['labeled'])

    data = dict(labeled=packed(2, True), unlabeled=packed(2, False))
    teacher_before = copy.deepcopy(model.teacher.state_dict())
    optim_wrapper = OptimWrapper(
        torch.optim.SGD(model.student.parameters(), lr=0.01))
    log_vars = model.train_step(data, optim_wrapper)
    assert {
        'loss', 'sup.decode.loss_ce', 'unsup.loss_ce', 'unsup.reliable_ratio'
    } <= set(log_vars)
    torch.testing.assert_close(
        log_vars['loss'],
        log_vars['sup.decode.loss_ce'] + log_vars['unsup.loss_ce'])
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key


def test_channels_last_keeps_weights_nhwc_and_the_losses():
    """``channels_last=True``: same losses and gradients, NHWC weights.

    Built from the same seed, both models hold the same weights; only the
    memory layout of the 4-D ones differs. A state dict copied into the
    channels-last model (as checkpoint loading and the EMA do) keeps it.
    """
    cfg = tiny_u2pl_cfg(with_contrast=True, cutmix=dict(prob=1.))
    plain = build_model(cfg)
    nhwc = build_model(dict(cfg, channels_last=True))
    nhwc.load_state_dict(plain.state_dict())
    convs = [(name, p) for name, p in nhwc.named_parameters() if p.dim() == 4]
    assert any(
        name.startswith('student.representation_head')
        for name, _ in convs) and any(
            name.startswith('teacher.') for name, _ in convs)
    for name, param in convs:
        assert param.is_contiguous(memory_format=torch.channels_last), name
    assert plain.student.backbone.stem[0].weight.is_contiguous()
    set_train_progress(1, 10)
    results = []
    for model in (plain, nhwc):
        model.train()
        set_semi(True)
        torch.manual_seed(3)  # the same CutMix boxes and dropout masks
        inputs, samples = make_semi_batch(2, 2, size=32)
        losses = model.loss(inputs, samples)
        total = sum(v for k, v in losses.items() if 'loss' in k)
        total.backward()
        model.contrastive_loss.end_step(keep=False)
        results.append(
            (losses, model.student.backbone.stem[0].weight.grad.clone()))
    (plain_losses, plain_grad), (nhwc_losses, nhwc_grad) = results
    assert set(plain_losses) == set(nhwc_losses)
    for key, value in plain_losses.items():
        torch.testing.assert_close(
            nhwc_losses[key], value, rtol=1e-4, atol=1e-5, msg=key)
    # other summation orders: compare on the scale of the largest entry
    torch.testing.assert_close(
        nhwc_grad, plain_grad, rtol=0, atol=1e-3 * plain_grad.abs().max())
    assert not torch.equal(plain_grad, torch.zeros_like(plain_grad))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_semi_step_on_cuda():
    model = build_model(
        tiny_u2pl_cfg(with_contrast=True, cutmix=dict(prob=1.))).cuda()
    model.train()
    set_semi(True)
    set_train_progress(3, 10)
    inputs, samples = make_semi_batch()
    inputs = {branch: value.cuda() for branch, value in inputs.items()}
    samples = {
        branch: [sample.cuda() for sample in value]
        for branch, value in samples.items()
    }
    losses = model.loss(inputs, samples)
    loss, log_vars = model.parse_losses(losses)
    loss.backward()
    assert loss.is_cuda and torch.isfinite(loss)
    assert {'unsup.loss_ce', 'contrast.loss_contrast',
            'unsup.pseudo_acc'} <= set(log_vars)
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.contrastive_loss.memory_bank.features.is_cuda
    assert model.last_pseudo_labels['pseudo_label'].is_cuda


# ---------------------------------------------------------------------------
# reuse_teacher_forward
def _contrastive_inputs(reuse, mask, monkeypatch, mode='eval'):
    """Teacher passes and the teacher targets the contrastive loss gets.

    ``targets`` also holds the step's losses and the main random stream's
    state after the step.
    """
    from mmseg_u2pl.models.segmentors import u2pl as u2pl_module
    model = build_model(
        tiny_u2pl_cfg(
            with_contrast=True,
            num_classes=NUM_CLASSES,
            reuse_teacher_forward=reuse,
            contrastive_teacher_mode=mode))
    model.train()
    set_semi(True)
    set_train_progress(0, 10)
    monkeypatch.setattr(u2pl_module, 'cutmix_masks',
                        lambda *args, **kwargs: mask.clone())
    passes, targets = [], {}
    extract_feat = model.teacher.extract_feat

    def counting_extract_feat(images):
        passes.append(images.shape[0])
        return extract_feat(images)

    model.teacher.extract_feat = counting_extract_feat
    contrast = model.contrastive_loss.forward

    def recording(rep_s, rep_t, prob_t, *args, **kwargs):
        targets.update(rep_t=rep_t.clone(), prob_t=prob_t.clone())
        return contrast(rep_s, rep_t, prob_t, *args, **kwargs)

    model.contrastive_loss.forward = recording
    inputs, samples = make_semi_batch(
        num_labeled=2,
        num_unlabeled=2,
        size=16,
        num_classes=NUM_CLASSES,
        seed=3)
    targets['losses'] = model.loss(inputs, samples)
    targets['rng_state'] = torch.get_rng_state()
    return model, inputs, passes, targets


@pytest.mark.parametrize('reuse', [False, True])
def test_reuse_teacher_forward_runs_the_teacher_once(reuse, monkeypatch):
    no_mix = torch.zeros(2, 16, 16, dtype=torch.bool)
    _, _, passes, targets = _contrastive_inputs(reuse, no_mix, monkeypatch)
    # one pass on [labeled; unlabeled] instead of unlabeled, then the mixed
    # batch
    assert passes == ([4] if reuse else [2, 4])
    # without mixing both give the same targets (the teacher is in eval
    # mode: each image's output does not depend on the others)
    _, _, _, other = _contrastive_inputs(not reuse, no_mix, monkeypatch)
    torch.testing.assert_close(targets['rep_t'], other['rep_t'])
    torch.testing.assert_close(targets['prob_t'], other['prob_t'])


def test_reused_teacher_features_are_mixed_with_the_cutmix_boxes(monkeypatch):
    from mmseg_u2pl.models.utils.seg_maps import resize_masks
    mask = torch.zeros(2, 16, 16, dtype=torch.bool)
    mask[0, :, :8] = True  # image 0 takes the left half of image 1
    model, inputs, _, targets = _contrastive_inputs(True, mask, monkeypatch)
    with torch.no_grad():
        images = torch.cat([inputs['labeled'], inputs['unlabeled']])
        _, _, rep = model._run(model.teacher, images, True)
    rep_t = targets['rep_t']
    half = rep.shape[-1] // 2
    assert resize_masks(mask, rep.shape[-2:])[0, :, :half].all()
    torch.testing.assert_close(rep_t[:2], rep[:2])  # labeled: as is
    torch.testing.assert_close(rep_t[3], rep[3])  # image 1: no box
    torch.testing.assert_close(rep_t[2, :, :, :half], rep[3, :, :, :half])
    torch.testing.assert_close(rep_t[2, :, :, half:], rep[2, :, :, half:])


# ---------------------------------------------------------------------------
# contrastive_teacher_mode
def test_contrastive_teacher_mode_is_checked():
    with pytest.raises(ValueError, match="teacher_mode.*'training'"):
        build_model(tiny_u2pl_cfg(contrastive_teacher_mode='training'))
    with pytest.raises(ValueError, match='set reuse_teacher_forward=False'):
        build_model(
            tiny_u2pl_cfg(
                contrastive_teacher_mode='train', reuse_teacher_forward=True))


def test_train_mode_teacher_gives_batch_statistics_targets(monkeypatch):
    mask = torch.zeros(2, 16, 16, dtype=torch.bool)
    mask[0, :, :8] = True
    _, _, passes, eval_targets = _contrastive_inputs(False, mask, monkeypatch)
    model, inputs, train_passes, train_targets = _contrastive_inputs(
        False, mask, monkeypatch, mode='train')
    assert passes == train_passes == [2, 4]
    # the targets come from batch statistics (and dropout), not the running
    # statistics
    assert not torch.allclose(train_targets['prob_t'], eval_targets['prob_t'])
    assert not torch.allclose(train_targets['rep_t'], eval_targets['rep_t'])
    # the same draws again for the same seed and iteration
    _, _, _, again = _contrastive_inputs(
        False, mask, monkeypatch, mode='train')
    assert torch.equal(again['rep_t'], train_targets['rep_t'])
    fresh = build_model(
        tiny_u2pl_cfg(with_contrast=True, num_classes=NUM_CLASSES))
    # the teacher is back in eval mode with its running statistics intact
    assert not model.teacher.training
    for name, buffer in model.teacher.named_buffers():
        assert torch.equal(buffer, fresh.teacher.get_buffer(name)), name
    # the main random stream and every other loss are the same in both modes
    assert torch.equal(train_targets['rng_state'], eval_targets['rng_state'])
    for key in ('sup.decode.loss_ce', 'unsup.loss_ce'):
        assert torch.equal(train_targets['losses'][key],
                           eval_targets['losses'][key]), key
    assert not torch.equal(train_targets['losses']['contrast.loss_contrast'],
                           eval_targets['losses']['contrast.loss_contrast'])


def test_contrastive_draws_differ_between_ranks(monkeypatch):
    """Anchors and negatives are drawn per rank; one process is unchanged."""
    from mmseg_u2pl.models.utils import random_stream
    mask = torch.zeros(2, 16, 16, dtype=torch.bool)

    def contrast_loss(world_size, rank):
        monkeypatch.setattr(random_stream, 'get_world_size',
                            lambda: world_size)
        monkeypatch.setattr(random_stream, 'get_rank', lambda: rank)
        _, _, _, targets = _contrastive_inputs(False, mask, monkeypatch)
        return targets['losses']

    single, rank0, rank1 = (contrast_loss(1, 0), contrast_loss(2, 0),
                            contrast_loss(2, 1))
    key = 'contrast.loss_contrast'
    assert not torch.equal(rank0[key], rank1[key])
    assert torch.equal(contrast_loss(1, 0)[key], single[key])
    # the rest of the step does not depend on the rank
    for other in (rank0, rank1):
        assert torch.equal(other['unsup.loss_ce'], single['unsup.loss_ce'])
