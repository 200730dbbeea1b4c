# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# U2PL on Cityscapes with a DINOv2 ViT-B/14 student. Everything U2PL sets
# (pseudo-labels, entropy filtering, the contrastive loss and its memory
# bank, EMA 0.99 from the first iteration, CutMix, OHEM on the labeled
# images, 200 epochs of 2 + 2 images on 8 GPUs) is the paper's, inherited
# from paper_cityscapes_u2pl.py. The encoder, neck, head and optimiser are
# those of paper_voc_u2pl_dinov2.py (their sources are stated there), with
# 19 classes; the crop is 798 = 57 x 14 (UniMatch V2's Cityscapes crop, a
# multiple of the patch), and validation slides a 798 window with stride
# 532 = 38 x 14 over the full 1024x2048 images. The paper's auxiliary FCN
# head on ResNet stage 3 has no counterpart here (UniMatch V2 uses none).
# Leaf configs (configs/dinov2/u2pl_*_cityscapes-*) set the split lists.
_base_ = './paper_cityscapes_u2pl.py'
crop_size = (798, 798)
checkpoint = 'https://download.openmmlab.com/mmpretrain/v1.0/dinov2/vit-base-p14_dinov2-pre_3rdparty_20230426-ba246503.pth'  # noqa
custom_imports = dict(
    imports=['mmseg_u2pl', 'mmpretrain.models'], allow_failed_imports=False)
data_preprocessor = dict(size=crop_size)  # the top-level copy, kept in step
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    segmentor=dict(
        _delete_=True,
        type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_val=0,
            seg_pad_val=255,
            size=crop_size),
        backbone=dict(
            type='mmpretrain.VisionTransformer',  # mmpretrain's registry
            arch='base',  # DINOv2-B: 768 channels, 12 blocks, 12 heads
            img_size=518,  # the checkpoint's position grid, resized to fit
            patch_size=14,
            layer_scale_init_value=1e-5,
            out_indices=(2, 5, 8, 11),
            out_type='featmap',
            init_cfg=dict(
                type='Pretrained', checkpoint=checkpoint,
                prefix='backbone.')),
        neck=dict(
            type='MultiLevelNeck',
            in_channels=[768, 768, 768, 768],
            out_channels=768,
            scales=[4, 2, 1, 0.5]),
        decode_head=dict(
            type='UPerHead',
            in_channels=[768, 768, 768, 768],
            in_index=[0, 1, 2, 3],
            pool_scales=(1, 2, 3, 6),
            channels=512,
            dropout_ratio=0.1,
            num_classes=19,
            norm_cfg=norm_cfg,
            align_corners=False,
            # OHEM as the paper's Cityscapes network (threshold 0.7, at
            # least 50,000 kept pixels per image, mean over kept pixels)
            sampler=_base_.ohem_sampler,
            loss_decode=dict(type='OHEMCrossEntropyLoss', loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='slide', crop_size=crop_size, stride=(532, 532))))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(2048, 1024),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
unlabeled_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResize',
        scale=(2048, 1024),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    dataset=dict(
        labeled=dict(pipeline=train_pipeline),
        unlabeled=dict(pipeline=unlabeled_pipeline)))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.01),
    clip_grad=None,
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1 / 40)}))
