# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Tests of the paper's DeepLabV3+ decoder ``DeepLabV3PlusHead``."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_u2pl.models.heads.deeplabv3plus_head import DeepLabV3PlusHead
from mmseg_u2pl.models.heads.representation_head import \
    forward_with_classifier_input

NORM = dict(type='BN', requires_grad=True)


def paper_head():
    return DeepLabV3PlusHead(
        in_channels=2048,
        c1_in_channels=256,
        c1_channels=256,
        channels=256,
        dilations=(12, 24, 36),
        num_classes=21,
        norm_cfg=NORM)


def tiny_head(**kwargs):
    cfg = dict(
        in_channels=16,
        c1_in_channels=4,
        c1_channels=6,
        channels=8,
        classifier_channels=5,
        dilations=(2, 3, 4),
        num_classes=3,
        norm_cfg=NORM)
    cfg.update(kwargs)
    return DeepLabV3PlusHead(**cfg)


def tiny_features(batch=2, size=32, low=4, high=16):
    """(stage 1 @ stride 4, stage 2, stage 3, stage 4 @ stride 8)."""
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(batch, low, size // 4, size // 4, generator=gen),
            torch.randn(batch, 3, size // 8, size // 8, generator=gen),
            torch.randn(batch, 3, size // 8, size // 8, generator=gen),
            torch.randn(batch, high, size // 8, size // 8, generator=gen))


def data_samples(batch, size, num_classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(batch):
        label = torch.randint(0, num_classes, (1, size, size), generator=gen)
        label[:, :2] = 255  # some ignored pixels
        sample = SegDataSample(
            metainfo=dict(
                img_shape=(size, size),
                ori_shape=(size, size),
                pad_shape=(size, size)))
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    return samples


def test_paper_structure():
    head = paper_head()
    # ASPP: image pooling + 1x1 + three 3x3 dilated branches = 5 branches
    pool_conv = head.image_pool[1].conv
    assert isinstance(head.image_pool[0], nn.AdaptiveAvgPool2d)
    assert (pool_conv.in_channels, pool_conv.out_channels) == (2048, 256)
    assert pool_conv.kernel_size == (1, 1)
    assert 1 + len(head.aspp_modules) == 5
    one_by_one = head.aspp_modules[0].conv
    assert one_by_one.kernel_size == (1, 1)
    assert (one_by_one.in_channels, one_by_one.out_channels) == (2048, 256)
    for branch, rate in zip(list(head.aspp_modules)[1:], (12, 24, 36)):
        conv = branch.conv
        assert conv.kernel_size == (3, 3)
        assert conv.dilation == (rate, rate)
        assert conv.padding == (rate, rate)
        assert (conv.in_channels, conv.out_channels) == (2048, 256)
        assert isinstance(branch.norm, nn.BatchNorm2d)
    # fuse conv 5 * 256 -> 256 (3x3) + Dropout(0.1)
    fuse, fuse_dropout = head.bottleneck
    assert (fuse.conv.in_channels, fuse.conv.out_channels) == (1280, 256)
    assert fuse.conv.kernel_size == (3, 3)
    assert isinstance(fuse_dropout, nn.Dropout2d) and fuse_dropout.p == 0.1
    # low-level branch 256 -> 256 (1x1)
    c1 = head.c1_bottleneck.conv
    assert (c1.in_channels, c1.out_channels, c1.kernel_size) == (256, 256, (1,
                                                                            1))
    # the classifier is conv_seg: 512 -> 256 -> 256 -> 21, no outer dropout
    assert head.dropout is None
    assert head.fused_channels == 512
    assert len(head.conv_seg) == 3
    for block, (cin, cout) in zip(head.conv_seg[:2], [(512, 256), (256, 256)]):
        conv_module, dropout = block
        assert (conv_module.conv.in_channels,
                conv_module.conv.out_channels) == (cin, cout)
        assert conv_module.conv.kernel_size == (3, 3)
        assert isinstance(conv_module.norm, nn.BatchNorm2d)
        assert isinstance(conv_module.activate, nn.ReLU)
        assert isinstance(dropout, nn.Dropout2d) and dropout.p == 0.1
    final = head.conv_seg[2]
    assert isinstance(final, nn.Conv2d)
    assert (final.in_channels, final.out_channels) == (256, 21)
    assert final.kernel_size == (1, 1) and final.bias is not None


def test_paper_forward_captures_512_fused_channels():
    torch.manual_seed(0)
    head = paper_head().eval()
    feats = (torch.randn(1, 256, 9, 9), torch.randn(1, 512, 5, 5),
             torch.randn(1, 1024, 5, 5), torch.randn(1, 2048, 5, 5))
    with torch.no_grad():
        seg_logits, cls_feat = forward_with_classifier_input(head, feats)
    assert cls_feat.shape == (1, 512, 9, 9)
    assert seg_logits.shape == (1, 21, 9, 9)
    torch.testing.assert_close(
        head.conv_seg(cls_feat), seg_logits, atol=1e-5, rtol=0)


def test_fused_features_by_hand():
    """Fused features = [c1 branch, upsampled ASPP fuse] computed manually."""
    torch.manual_seed(0)
    head = tiny_head().eval()
    feats = tiny_features()
    low, high = feats[0], feats[3]
    with torch.no_grad():
        _, cls_feat = forward_with_classifier_input(head, feats)
        pooled = head.image_pool(high).expand(-1, -1, *high.shape[2:])
        branches = [pooled] + [m(high) for m in head.aspp_modules]
        assert len(branches) == 5
        aspp = head.bottleneck(torch.cat(branches, dim=1))
        aspp = F.interpolate(
            aspp, size=low.shape[2:], mode='bilinear', align_corners=False)
        expected = torch.cat([head.c1_bottleneck(low), aspp], dim=1)
    assert cls_feat.shape == (2, 6 + 8, 8, 8)
    torch.testing.assert_close(cls_feat, expected, atol=1e-6, rtol=0)


def test_init_weights():
    head = paper_head()
    head.init_weights()
    final = head.conv_seg[2]
    assert 0.008 < final.weight.std().item() < 0.012
    assert abs(final.weight.mean().item()) < 1e-3
    assert torch.all(final.bias == 0)
    # the override hits only the final conv: BN weights stay 1 and the
    # ConvModule convs keep their (much larger) Kaiming scale
    for module in head.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1)
    first = head.conv_seg[0][0].conv.weight
    expected_std = math.sqrt(2. / (256 * 9))  # kaiming fan_out, ReLU
    assert first.std().item() > 0.5 * expected_std


@pytest.mark.parametrize('loss_decode, keys', [
    (dict(type='CrossEntropyLoss', loss_weight=1.0), ['loss_ce']),
    ([
        dict(type='CrossEntropyLoss', loss_name='loss_ce'),
        dict(type='DiceLoss', loss_name='loss_dice')
    ], ['loss_ce', 'loss_dice']),
])
def test_tiny_loss_by_feat(loss_decode, keys):
    torch.manual_seed(0)
    head = tiny_head(loss_decode=loss_decode).train()
    feats = tiny_features()
    seg_logits = head(feats)
    assert seg_logits.shape == (2, 3, 8, 8)
    losses = head.loss_by_feat(seg_logits, data_samples(2, 32))
    for key in keys:
        assert torch.isfinite(losses[key]) and losses[key] > 0
    assert 'acc_seg' in losses
    sum(losses[key] for key in keys).backward()
    for module in (head.image_pool[1].conv, head.aspp_modules[3].conv,
                   head.bottleneck[0].conv, head.c1_bottleneck.conv,
                   head.conv_seg[0][0].conv, head.conv_seg[2]):
        assert module.weight.grad is not None
        assert torch.isfinite(module.weight.grad).all()
        assert module.weight.grad.abs().sum() > 0


def test_classifier_without_blocks():
    head = tiny_head(num_classifier_convs=0, dropout_ratio=0.)
    assert len(head.conv_seg) == 1 and head.conv_seg[0].in_channels == 14
    assert len(head.bottleneck) == 1  # no dropout layer at ratio 0
    head.init_weights()
    assert torch.all(head.conv_seg[0].bias == 0)


def model_cfg():
    """EncoderDecoder: tiny ResNetV1c-18 d8 + DeepLabV3PlusHead."""
    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            mean=[0., 0., 0.],
            std=[1., 1., 1.],
            size=(64, 64),
            pad_val=0,
            seg_pad_val=255),
        backbone=dict(
            type='ResNetV1c',
            depth=18,
            stem_channels=8,
            base_channels=8,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            strides=(1, 2, 1, 1),
            dilations=(1, 1, 2, 4),
            norm_cfg=NORM,
            contract_dilation=True),
        decode_head=dict(
            type='DeepLabV3PlusHead',
            in_channels=64,
            c1_in_channels=8,
            c1_channels=8,
            channels=8,
            classifier_channels=8,
            dilations=(2, 3, 4),
            in_index=(0, 3),
            num_classes=3,
            norm_cfg=NORM,
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))


def test_encoder_decoder_from_config():
    torch.manual_seed(0)
    # the data preprocessor is built from mmengine's registry: needs a scope
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(ConfigDict(model_cfg()))
    assert isinstance(model.decode_head, DeepLabV3PlusHead)
    model.init_weights()
    model.train()
    inputs = torch.randn(2, 3, 64, 64)
    samples = data_samples(2, 64)
    losses = model.loss(inputs, samples)
    loss = losses['decode.loss_ce']
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0
    # stride-4 logits from the real backbone, upsampled for prediction
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(inputs)
        seg_logits, cls_feat = forward_with_classifier_input(
            model.decode_head, feats)
        assert cls_feat.shape == (2, 16, 16, 16)
        assert seg_logits.shape == (2, 3, 16, 16)
        results = model.predict(inputs, samples)
    assert results[0].pred_sem_seg.data.shape == (1, 64, 64)


@pytest.mark.parametrize('kwargs, match', [
    (dict(c1_in_channels=0), 'c1_in_channels'),
    (dict(in_channels=[4, 16]), 'in_channels'),
    (dict(dilations=(1, 12)), 'dilations'),
    (dict(dilations=12), 'dilations'),
    (dict(input_transform='resize_concat'), 'multiple_select'),
    (dict(in_index=(0, 1, 3)), 'in_index'),
    (dict(num_classifier_convs=-1), 'num_classifier_convs'),
    (dict(classifier_kernel_size=2), 'kernel_size'),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_head(**kwargs)


def test_wrong_input_channels():
    head = tiny_head()
    feats = tiny_features(low=5)
    with pytest.raises(ValueError, match='c1_in_channels=4'):
        head(feats)
