# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# The U2PL paper network (paper Sec. 4.1): DeepLabV3+ on ResNet-101 with
# the deep 128-channel stem, output stride 8 and multi-grid (1, 2, 4) in the
# last stage. Set up for PASCAL VOC (21 classes, 513x513 crops); the
# Cityscapes variant is paper_deeplabv3plus_r101-d8_cityscapes.py.
# SyncBN becomes BN automatically without GPUs (tools/train.py).
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,  # image padding 0
    seg_pad_val=255,  # label padding: ignored
    size=(513, 513))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='ResNetV1c',  # deep stem: three 3x3 convs 3 -> 64 -> 64 -> 128
        depth=101,
        stem_channels=128,
        base_channels=64,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        # output stride 8: stages 3 and 4 keep stride 1 and are dilated.
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        # mmseg's `multi_grid` gives the absolute dilation of each block of
        # the last stage (it replaces `dilations[3]`, it is not multiplied
        # by it), so the paper's multi-grid (1, 2, 4) on rate 4 is
        # (4, 8, 16). This is exactly the reference network: its last stage
        # uses 4 * (1, 2, 4) and its stage 3 uses dilation 1 in the first
        # block and 2 in the others, which `contract_dilation=True` gives.
        multi_grid=(4, 8, 16),
        contract_dilation=True,
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        # ImageNet weights of a ResNet-101 with this 128-channel deep stem:
        # the U2PL authors' `resnet101.pth` (README of
        # https://github.com/Haochen-Wang409/U2PL, "Prepare Pretrained
        # Backbone":
        # https://drive.google.com/file/d/1nzSX8bX3zoRREn6WnoEeAPbKYPPOa-3Y),
        # with its stem keys renamed to mmseg's (docs/data_preparation.md,
        # "Pretrained backbone"). mmseg's `open-mmlab://resnet101_v1c` has a
        # 64-channel stem and does not fit. Override on the command line:
        #   --cfg-options model.segmentor.backbone.init_cfg.checkpoint=PATH
        # (`model.backbone...` in supervised configs), or train from scratch
        # with `...backbone.init_cfg=None`.
        init_cfg=dict(
            type='Pretrained',
            checkpoint='pretrain/resnet101-stem128_u2pl-imagenet_mmseg.pth')),
    decode_head=dict(
        type='DeepLabV3PlusHead',  # the paper decoder (mmseg_u2pl)
        in_channels=2048,
        c1_in_channels=256,
        c1_channels=256,
        channels=256,
        classifier_channels=256,
        dilations=(12, 24, 36),
        in_index=(0, 3),
        dropout_ratio=0.1,
        num_classes=21,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    # VOC: single scale, whole image
    test_cfg=dict(mode='whole'))
