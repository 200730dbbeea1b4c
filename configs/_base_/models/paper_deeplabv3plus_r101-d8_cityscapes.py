# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# The paper network for Cityscapes (paper Sec. 4.1): 19 classes,
# 769x769 crops, OHEM cross-entropy, an auxiliary FCN head on stage 3, and
# sliding-window evaluation on the full 1024x2048 images.
_base_ = './paper_deeplabv3plus_r101-d8.py'
data_preprocessor = dict(size=(769, 769))
# OHEM as in the reference: threshold 0.7, at least 100,000 kept pixels per
# GPU batch, on both heads, averaged over the KEPT pixels. mmseg's
# OHEMPixelSampler chooses the pixels and counts `min_kept` per image (2
# labeled images per GPU: 50000 x 2); OHEMCrossEntropyLoss divides by the
# kept count (mmseg's CrossEntropyLoss would divide by all pixels).
ohem_sampler = dict(type='OHEMPixelSampler', thresh=0.7, min_kept=50000)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(
        num_classes=19,
        sampler=ohem_sampler,
        loss_decode=dict(type='OHEMCrossEntropyLoss', loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=1024,  # stage 3 of ResNet-101
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=_base_.norm_cfg,
        align_corners=False,
        sampler=ohem_sampler,
        loss_decode=dict(type='OHEMCrossEntropyLoss', loss_weight=0.4)),
    test_cfg=dict(mode='slide', crop_size=(769, 769), stride=(513, 513)))
