# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Tests of the classifier-input capture and of ``RepresentationHead``."""
import pytest
import torch
import torch.nn as nn
from mmseg.models.decode_heads import (ASPPHead, DepthwiseSeparableASPPHead,
                                       FCNHead, SegformerHead, UPerHead)
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS

from mmseg_u2pl.models.heads.deeplabv3plus_head import DeepLabV3PlusHead
from mmseg_u2pl.models.heads.representation_head import (
    RepresentationHead, forward_with_classifier_input)

NORM = dict(type='BN', requires_grad=True)
# Backbone output channels of the tiny feature maps used below.
CHANNELS = (8, 16, 32, 64)


def d8_features(batch=2, size=64):
    """ResNet-d8-like outputs: stage 1 at stride 4, stages 2-4 at stride 8."""
    gen = torch.Generator().manual_seed(0)
    sizes = (size // 4, size // 8, size // 8, size // 8)
    return tuple(
        torch.randn(batch, c, s, s, generator=gen)
        for c, s in zip(CHANNELS, sizes))


def pyramid_features(batch=2, size=64):
    """Outputs at strides 4/8/16/32."""
    gen = torch.Generator().manual_seed(1)
    return tuple(
        torch.randn(batch, c, size // s, size // s, generator=gen)
        for c, s in zip(CHANNELS, (4, 8, 16, 32)))


def build_head(name, dropout_ratio=0.1):
    """Tiny heads: (head, features, expected cls_feat (C, H, W))."""
    common = dict(num_classes=3, norm_cfg=NORM, dropout_ratio=dropout_ratio)
    if name == 'FCNHead':
        head = FCNHead(
            in_channels=64, in_index=3, channels=8, num_convs=1, **common)
        return head, d8_features(), (8, 8, 8)
    if name == 'ASPPHead':
        head = ASPPHead(
            in_channels=64,
            in_index=3,
            channels=8,
            dilations=(1, 2, 3),
            **common)
        return head, d8_features(), (8, 8, 8)
    if name == 'DepthwiseSeparableASPPHead':
        head = DepthwiseSeparableASPPHead(
            in_channels=64,
            in_index=3,
            channels=8,
            c1_in_channels=8,
            c1_channels=4,
            dilations=(1, 2, 3),
            **common)
        return head, d8_features(), (8, 16, 16)
    if name == 'UPerHead':
        head = UPerHead(
            in_channels=list(CHANNELS),
            in_index=[0, 1, 2, 3],
            channels=8,
            pool_scales=(1, 2),
            **common)
        return head, pyramid_features(), (8, 16, 16)
    if name == 'SegformerHead':
        head = SegformerHead(
            in_channels=list(CHANNELS),
            in_index=[0, 1, 2, 3],
            channels=8,
            **common)
        return head, pyramid_features(), (8, 16, 16)
    if name == 'DeepLabV3PlusHead':
        head = DeepLabV3PlusHead(
            in_channels=64,
            c1_in_channels=8,
            c1_channels=4,
            channels=8,
            classifier_channels=8,
            dilations=(2, 3, 4),
            **common)
        # fused = c1_channels + channels = 12 at stride 4
        return head, d8_features(), (12, 16, 16)
    raise KeyError(name)


MMSEG_HEADS = [
    'FCNHead', 'ASPPHead', 'DepthwiseSeparableASPPHead', 'UPerHead',
    'SegformerHead'
]
ALL_HEADS = MMSEG_HEADS + ['DeepLabV3PlusHead']


def assert_no_hooks(head):
    for module in (head.conv_seg, head.dropout):
        if module is not None:
            assert len(module._forward_pre_hooks) == 0
            assert len(module._forward_hooks) == 0


@pytest.mark.parametrize('name', ALL_HEADS)
def test_capture_eval_matches_classifier(name):
    torch.manual_seed(0)
    head, feats, expected = build_head(name)
    head.eval()
    seg_logits, cls_feat = forward_with_classifier_input(head, feats)
    assert tuple(cls_feat.shape) == (2, ) + expected
    assert seg_logits.shape[1] == 3
    torch.testing.assert_close(
        head.conv_seg(cls_feat), seg_logits, atol=1e-6, rtol=0)
    # same logits as a plain forward: the capture changes nothing
    torch.testing.assert_close(head(feats), seg_logits, atol=1e-6, rtol=0)
    assert_no_hooks(head)


@pytest.mark.parametrize('name', ALL_HEADS)
def test_capture_keeps_graph(name):
    torch.manual_seed(0)
    head, feats, _ = build_head(name)
    head.train()
    _, cls_feat = forward_with_classifier_input(head, feats)
    assert cls_feat.requires_grad
    (cls_feat**2).mean().backward()
    grads = [p.grad for p in head.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    # the classifier was not on this path
    assert all(p.grad is None for p in head.conv_seg.parameters())


@pytest.mark.parametrize('name', MMSEG_HEADS)
def test_capture_train_is_pre_dropout(name):
    torch.manual_seed(0)
    head, feats, _ = build_head(name, dropout_ratio=0.5)
    head.train()
    assert isinstance(head.dropout, nn.Dropout2d)
    seg_logits, cls_feat = forward_with_classifier_input(head, feats)
    # The same features without dropout (BN still uses batch statistics).
    head.dropout.eval()
    clean_logits, clean_feat = forward_with_classifier_input(head, feats)
    torch.testing.assert_close(cls_feat, clean_feat, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        head.conv_seg(clean_feat), clean_logits, atol=1e-6, rtol=0)
    # dropout really acted on the classifier input in the first pass
    assert not torch.allclose(head.conv_seg(cls_feat), seg_logits, atol=1e-4)
    assert_no_hooks(head)


def test_capture_train_deeplabv3plus_is_fused_features():
    torch.manual_seed(0)
    head, feats, _ = build_head('DeepLabV3PlusHead', dropout_ratio=0.5)
    head.train()
    assert head.dropout is None
    torch.manual_seed(3)
    _, cls_feat = forward_with_classifier_input(head, feats)
    torch.manual_seed(3)  # same ASPP dropout mask
    fused = head._forward_feature(feats)
    torch.testing.assert_close(cls_feat, fused, atol=1e-6, rtol=0)
    assert_no_hooks(head)


def test_capture_inplace_dropout_keeps_pre_dropout():
    torch.manual_seed(0)
    head, feats, _ = build_head('FCNHead')
    head.dropout = nn.Dropout2d(0.5, inplace=True)
    head.train()
    _, cls_feat = forward_with_classifier_input(head, feats)
    head.dropout.eval()
    _, clean_feat = forward_with_classifier_input(head, feats)
    torch.testing.assert_close(cls_feat, clean_feat, atol=1e-6, rtol=0)


@pytest.mark.parametrize('name', ['FCNHead', 'DeepLabV3PlusHead'])
def test_capture_removes_hooks_on_exception(name):
    head, feats, _ = build_head(name)

    def broken_classifier(x):
        raise RuntimeError('classifier exploded')

    # pre-hooks run, then the classifier raises
    head.conv_seg.forward = broken_classifier
    with pytest.raises(RuntimeError, match='classifier exploded'):
        forward_with_classifier_input(head, feats)
    assert_no_hooks(head)


class _TwoCallHead(BaseDecodeHead):

    def forward(self, inputs):
        x = self._transform_inputs(inputs)
        return self.cls_seg(x) + self.cls_seg(x)


class _NoCallHead(BaseDecodeHead):

    def forward(self, inputs):
        return self._transform_inputs(inputs)


class _SideDropoutHead(BaseDecodeHead):
    """Uses its dropout on another tensor and not before ``conv_seg``."""

    def forward(self, inputs):
        x = self._transform_inputs(inputs)
        side = self.dropout(x * 2.)
        return self.conv_seg(x) + 0. * side.sum()


def _simple_head(cls, dropout_ratio=0.1):
    return cls(
        in_channels=64,
        channels=64,
        num_classes=3,
        dropout_ratio=dropout_ratio)


def test_capture_requires_single_classifier_call():
    feats = d8_features()
    with pytest.raises(RuntimeError, match='_TwoCallHead.*2 times'):
        forward_with_classifier_input(_simple_head(_TwoCallHead), feats)
    with pytest.raises(RuntimeError, match='_NoCallHead.*0 times'):
        forward_with_classifier_input(_simple_head(_NoCallHead), feats)


def test_capture_ignores_dropout_not_feeding_classifier():
    feats = d8_features()
    head = _simple_head(_SideDropoutHead, dropout_ratio=0.5).train()
    _, cls_feat = forward_with_classifier_input(head, feats)
    torch.testing.assert_close(cls_feat, feats[-1], atol=0, rtol=0)


def test_capture_without_conv_seg_raises():

    class Plain(nn.Module):

        def forward(self, inputs):
            return inputs[-1]

    with pytest.raises(TypeError, match='Plain has no `conv_seg`'):
        forward_with_classifier_input(Plain(), d8_features())


# ---------------------------------------------------------------- the head


def test_representation_head_paper_structure():
    head = MODELS.build(dict(type='RepresentationHead', in_channels=512))
    assert isinstance(head, RepresentationHead)
    assert len(head.convs) == 2
    expected = [(512, 256), (256, 256)]
    for block, (cin, cout) in zip(head.convs, expected):
        conv_module, dropout = block
        assert conv_module.conv.in_channels == cin
        assert conv_module.conv.out_channels == cout
        assert conv_module.conv.kernel_size == (3, 3)
        assert conv_module.conv.padding == (1, 1)
        assert isinstance(conv_module.norm, nn.BatchNorm2d)
        assert isinstance(conv_module.activate, nn.ReLU)
        assert isinstance(dropout, nn.Dropout2d) and dropout.p == 0.1
    assert head.conv_rep.in_channels == 256
    assert head.conv_rep.out_channels == 256
    assert head.conv_rep.kernel_size == (1, 1)
    assert head.conv_rep.bias is not None


def test_representation_head_shape_and_no_normalisation():
    torch.manual_seed(0)
    head = RepresentationHead(
        in_channels=12, channels=8, out_channels=6).eval()
    z = head(torch.randn(2, 12, 5, 7))
    assert z.shape == (2, 6, 5, 7)
    # not L2-normalised per pixel
    assert not torch.allclose(z.norm(dim=1), torch.ones(2, 5, 7), atol=1e-3)


def test_representation_head_hand_computed():
    # one 1x1 conv + ReLU, no norm, no dropout, then the projection
    head = RepresentationHead(
        in_channels=3,
        channels=2,
        out_channels=1,
        num_convs=1,
        kernel_size=1,
        dropout_ratio=0.,
        norm_cfg=None)
    conv = head.convs[0][0].conv
    assert len(head.convs[0]) == 1  # no dropout layer
    with torch.no_grad():
        conv.weight.copy_(
            torch.tensor([[1., 0., 1.], [0., 1., 0.]]).view(2, 3, 1, 1))
        conv.bias.copy_(torch.tensor([0., 0.5]))
        head.conv_rep.weight.copy_(torch.tensor([0.5, 3.]).view(1, 2, 1, 1))
        head.conv_rep.bias.copy_(torch.tensor([1.]))
    x = torch.tensor([1., -2., 3.]).view(1, 3, 1, 1)
    # hidden = relu([1 + 3, -2 + 0.5]) = [4, 0]; z = 0.5 * 4 + 3 * 0 + 1
    assert head(x).item() == pytest.approx(3.0)
    x2 = torch.tensor([0., 2., 0.]).view(1, 3, 1, 1)
    # hidden = relu([0, 2.5]) = [0, 2.5]; z = 3 * 2.5 + 1
    assert head(x2).item() == pytest.approx(8.5)


def test_representation_head_no_convs():
    head = RepresentationHead(in_channels=5, out_channels=3, num_convs=0)
    assert len(head.convs) == 0
    assert head.conv_rep.in_channels == 5
    x = torch.randn(1, 5, 2, 2)
    expected = torch.nn.functional.conv2d(x, head.conv_rep.weight,
                                          head.conv_rep.bias)
    torch.testing.assert_close(head(x), expected)


def test_representation_head_gradients_and_dropout():
    torch.manual_seed(0)
    head = RepresentationHead(
        in_channels=6, channels=8, out_channels=4, dropout_ratio=0.5)
    x = torch.randn(2, 6, 6, 6, requires_grad=True)
    head.train()
    z = head(x)
    z.pow(2).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in head.named_parameters():
        assert param.grad is not None, name
    assert head.convs[0][0].conv.weight.grad.abs().sum() > 0
    assert head.conv_rep.weight.grad.abs().sum() > 0
    # dropout is random in train mode, off in eval mode
    with torch.no_grad():
        assert not torch.allclose(head(x), head(x))
        head.eval()
        torch.testing.assert_close(head(x), head(x))


@pytest.mark.parametrize('kwargs, match', [
    (dict(in_channels=0), 'in_channels'),
    (dict(in_channels=4, channels=-1), 'channels'),
    (dict(in_channels=4, num_convs=-1), 'num_convs'),
    (dict(in_channels=4, kernel_size=2), 'kernel_size'),
    (dict(in_channels=4, dropout_ratio=1.0), 'dropout_ratio'),
])
def test_representation_head_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RepresentationHead(**kwargs)


def test_representation_head_wrong_input_channels():
    head = RepresentationHead(in_channels=4, channels=4, out_channels=4)
    with pytest.raises(ValueError, match='in_channels=4.*got shape'):
        head(torch.randn(1, 5, 3, 3))


def test_representation_on_captured_features():
    torch.manual_seed(0)
    head, feats, expected = build_head('DeepLabV3PlusHead')
    rep = RepresentationHead(
        in_channels=expected[0], channels=8, out_channels=6)
    head.train()
    rep.train()
    seg_logits, cls_feat = forward_with_classifier_input(head, feats)
    z = rep(cls_feat)
    assert z.shape == (2, 6) + expected[1:]
    assert z.shape[2:] == seg_logits.shape[2:]
    z.mean().backward()
    # the contrastive gradient reaches the decoder (not detached)
    assert head.c1_bottleneck.conv.weight.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_capture_cuda():
    head, feats, expected = build_head('DeepLabV3PlusHead')
    head = head.cuda().eval()
    feats = tuple(f.cuda() for f in feats)
    rep = RepresentationHead(in_channels=expected[0], channels=8).cuda()
    seg_logits, cls_feat = forward_with_classifier_input(head, feats)
    assert cls_feat.is_cuda and rep(cls_feat).is_cuda
    torch.testing.assert_close(
        head.conv_seg(cls_feat), seg_logits, atol=1e-5, rtol=0)
