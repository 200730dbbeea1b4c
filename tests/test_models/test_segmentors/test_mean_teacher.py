# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""``MeanTeacherSegmentor``: modes, weights, checkpoints, prediction, cfg."""
import copy

import pytest
import torch
from mmengine.runner import load_checkpoint
from mmseg.models.segmentors import BaseSegmentor, EncoderDecoder
from mmseg.registry import MODELS
from toy_fixtures import one_thread  # noqa: F401  (pytest fixture)
from toy_fixtures import (build_model, make_semi_batch, set_train_progress,
                          tiny_segmentor_cfg, set_semi)
from torch import nn

from mmseg_u2pl.models.data_preprocessor import SemiSegDataPreProcessor
from mmseg_u2pl.models.segmentors.mean_teacher import MeanTeacherSegmentor

pytestmark = pytest.mark.usefixtures('one_thread')


def mean_teacher_cfg(**kwargs):
    return dict(
        type='MeanTeacherSegmentor', segmentor=tiny_segmentor_cfg(), **kwargs)


@pytest.fixture
def model():
    return build_model(mean_teacher_cfg())


def state_of(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_states_equal(actual, expected):
    assert actual.keys() == expected.keys()
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


def perturb(module, seed):
    """Give every float tensor of ``module`` new random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)


# ---------------------------------------------------------------------------
# construction and modes
# ---------------------------------------------------------------------------
def test_student_teacher_and_data_preprocessor(model):
    assert isinstance(model.student, EncoderDecoder)
    assert isinstance(model.teacher, EncoderDecoder)
    assert model.teacher is not model.student
    assert_states_equal(state_of(model.teacher), state_of(model.student))
    # a SemiSegDataPreProcessor with the student's settings
    assert isinstance(model.data_preprocessor, SemiSegDataPreProcessor)
    inner = model.data_preprocessor.seg_preprocessor
    torch.testing.assert_close(inner.mean.flatten(),
                               torch.tensor([123.675, 116.28, 103.53]))
    assert inner.size == (32, 32)
    assert model.semi_test_cfg == dict(predict_on='teacher')
    assert model.semi_active is None


def test_teacher_stays_in_eval_mode_and_never_requires_grad(model):
    model.train()
    assert model.training and model.student.training
    assert all(m.training for m in model.student.modules())
    assert not any(m.training for m in model.teacher.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train(True)  # mmengine's loops call this every iteration
    assert not model.teacher.training
    assert not model.teacher.backbone.layer1[0].bn1.training
    assert all(p.requires_grad for p in model.student.parameters())
    assert not any(p.requires_grad for p in model.teacher.parameters())


# ---------------------------------------------------------------------------
# weights and checkpoints
# ---------------------------------------------------------------------------
@pytest.fixture
def plain_state():
    """A plain mmseg EncoderDecoder's state dict, other values than ours."""
    plain = build_model(tiny_segmentor_cfg(), seed=1)
    perturb(plain, seed=1)
    return state_of(plain)


def test_plain_state_dict_fills_student_and_teacher(model, plain_state):
    result = model.load_state_dict(plain_state, strict=False)
    assert list(result.missing_keys) == []
    assert list(result.unexpected_keys) == []
    assert_states_equal(state_of(model.student), plain_state)
    assert_states_equal(state_of(model.teacher), plain_state)


def test_plain_checkpoint_file_fills_student_and_teacher(
        model, plain_state, tmp_path):
    path = str(tmp_path / 'plain.pth')
    torch.save(dict(meta=dict(), state_dict=plain_state), path)
    load_checkpoint(model, path, map_location='cpu', strict=True)
    assert_states_equal(state_of(model.student), plain_state)
    assert_states_equal(state_of(model.teacher), plain_state)
    # a DDP-style 'module.' prefix is removed by mmengine first
    model2 = build_model(mean_teacher_cfg(), seed=5)
    torch.save(
        dict(state_dict={
            'module.' + k: v
            for k, v in plain_state.items()
        }), path)
    load_checkpoint(model2, path, map_location='cpu')
    assert_states_equal(state_of(model2.teacher), plain_state)


def test_own_checkpoint_round_trips_unchanged(model, tmp_path):
    perturb(model.teacher, seed=2)  # teacher != student
    saved = state_of(model)
    assert not torch.equal(saved['student.decode_head.conv_seg.weight'],
                           saved['teacher.decode_head.conv_seg.weight'])
    fresh = build_model(mean_teacher_cfg(), seed=7)
    fresh.load_state_dict(saved, strict=True)
    assert_states_equal(state_of(fresh), saved)
    # and through a checkpoint file
    path = str(tmp_path / 'own.pth')
    torch.save(dict(state_dict=saved), path)
    other = build_model(mean_teacher_cfg(), seed=8)
    load_checkpoint(other, path, map_location='cpu', strict=True)
    assert_states_equal(state_of(other), saved)


def test_init_weights_makes_the_teacher_a_copy(model):
    perturb(model.teacher, seed=3)
    model.init_weights()
    assert_states_equal(state_of(model.teacher), state_of(model.student))


# ---------------------------------------------------------------------------
# prediction
# ---------------------------------------------------------------------------
def force_class(net, cls):
    """Make ``net`` predict ``cls`` everywhere (classifier bias only)."""
    with torch.no_grad():
        net.decode_head.conv_seg.weight.zero_()
        net.decode_head.conv_seg.bias.fill_(-5.)
        net.decode_head.conv_seg.bias[cls] = 5.


def raw_batch(num=2, size=32):
    """A test batch as the dataloader gives it (uint8, packed samples)."""
    _, samples = make_semi_batch(num, 1, size=size)
    gen = torch.Generator().manual_seed(0)
    inputs = [
        torch.randint(
            0, 256, (3, size, size), generator=gen, dtype=torch.uint8)
        for _ in range(num)
    ]
    for sample in samples['labeled']:
        sample.set_metainfo(dict(padding_size=[0, 0, 0, 0]))
    return dict(inputs=inputs, data_samples=samples['labeled'])


def predicted_classes(model, batch):
    results = model.val_step(copy.deepcopy(batch))
    return {int(v) for r in results for v in r.pred_sem_seg.data.unique()}


@pytest.mark.parametrize('predict_on', ['teacher', 'student'])
def test_predict_uses_the_configured_network(predict_on):
    model = build_model(
        mean_teacher_cfg(semi_test_cfg=dict(predict_on=predict_on)))
    force_class(model.teacher, 2)
    force_class(model.student, 4)
    model.eval()
    batch = raw_batch()
    expected = 2 if predict_on == 'teacher' else 4
    assert predicted_classes(model, batch) == {expected}
    # switching at run time (as TeacherStudentValLoop does)
    model.semi_test_cfg['predict_on'] = 'student'
    assert predicted_classes(model, batch) == {4}
    model.semi_test_cfg['predict_on'] = 'teacher'
    assert predicted_classes(model, batch) == {2}
    # _forward (tensor mode) follows too
    inputs = torch.randn(1, 3, 32, 32)
    logits = model._forward(inputs)
    assert int(logits.argmax(1).unique()) == 2


# ---------------------------------------------------------------------------
# bad configs
# ---------------------------------------------------------------------------
def test_unknown_semi_cfg_keys_are_named():
    with pytest.raises(KeyError, match='warmup_iter'):
        build_model(mean_teacher_cfg(semi_train_cfg=dict(warmup_iter=1)))
    with pytest.raises(KeyError, match='predict_with'):
        build_model(mean_teacher_cfg(semi_test_cfg=dict(predict_with='x')))
    with pytest.raises(
            ValueError, match='predict_on.*"teacher" or '
            '"student".*both'):
        build_model(mean_teacher_cfg(semi_test_cfg=dict(predict_on='both')))


@MODELS.register_module(force=True)
class HeadlessSegmentor(BaseSegmentor):
    """A segmentor without decode head (e.g. a user's own class)."""

    def __init__(self, data_preprocessor=None, init_cfg=None):
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = nn.Conv2d(3, 4, 1)

    def extract_feat(self, inputs):
        return self.backbone(inputs)

    def encode_decode(self, inputs, batch_data_samples):
        return self.backbone(inputs)

    def loss(self, inputs, data_samples):
        return dict()

    def predict(self, inputs, data_samples=None):
        return data_samples

    def _forward(self, inputs, data_samples=None):
        return self.backbone(inputs)


def test_segmentor_without_decode_head_is_rejected():
    with pytest.raises(ValueError) as info:
        build_model(
            dict(
                type='MeanTeacherSegmentor',
                segmentor=dict(
                    type='HeadlessSegmentor',
                    data_preprocessor=dict(type='SegDataPreProcessor'))))
    message = str(info.value)
    assert 'model.segmentor' in message and 'HeadlessSegmentor' in message
    assert 'decode_head=dict(' in message
    # a stock EncoderDecoder config without decode_head fails while building
    cfg = tiny_segmentor_cfg()
    del cfg['decode_head']
    with pytest.raises(TypeError, match='decode_head'):
        build_model(dict(type='MeanTeacherSegmentor', segmentor=cfg))


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------
def test_loss_needs_the_mean_teacher_hook(model):
    set_train_progress(0, 10)
    inputs, samples = make_semi_batch()
    with pytest.raises(RuntimeError, match='MeanTeacherHook'):
        model.loss(inputs, samples)


def test_loss_rejects_a_supervised_batch(model):
    set_semi(False)
    inputs, samples = make_semi_batch()
    with pytest.raises(TypeError, match='SemiDataset'):
        model.loss(inputs['labeled'], samples['labeled'])


@pytest.mark.parametrize('semi_active', [False, True])
def test_base_class_trains_the_student_on_labeled_images(model, semi_active):
    set_train_progress(0, 10)
    model.train()
    set_semi(semi_active)
    inputs, samples = make_semi_batch()
    losses = model.loss(inputs, samples)
    # supervised keys only, before and after the warm-up
    assert set(losses) == {'sup.decode.loss_ce', 'sup.decode.acc_seg'}
    assert torch.isfinite(losses['sup.decode.loss_ce'])
    assert losses['sup.decode.loss_ce'].requires_grad


def test_base_class_supervised_loss_equals_the_students(model):
    model.train()
    set_semi(False)
    inputs, samples = make_semi_batch()
    student_copy = copy.deepcopy(model.student)
    torch.manual_seed(0)
    losses = model.loss(inputs, samples)
    torch.manual_seed(0)
    reference = student_copy.loss(inputs['labeled'], samples['labeled'])
    torch.testing.assert_close(losses['sup.decode.loss_ce'],
                               reference['decode.loss_ce'])


def test_mean_teacher_segmentor_class_is_registered():
    assert MODELS.get('MeanTeacherSegmentor') is MeanTeacherSegmentor
