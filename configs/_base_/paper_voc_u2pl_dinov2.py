# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# U2PL on PASCAL VOC with a DINOv2 ViT-B/14 student. Everything U2PL sets
# (pseudo-labels, entropy filtering, the contrastive loss and its memory
# bank, EMA 0.99, warm-up, CutMix, 80 epochs of 4 + 4 images on 4 GPUs) is
# the paper's, inherited from paper_voc_u2pl.py. What changes is what a
# plain ViT needs:
# - the encoder: mmpretrain's VisionTransformer with DINOv2-B weights
#   (patch 14, layer scale), features of blocks 3, 6, 9 and 12 brought to
#   strides 4, 8, 16 and 32 by mmseg's MultiLevelNeck, decoded by UPerHead
#   (512 channels: the representation head's input, as the paper's 512-d
#   fused DeepLabV3+ features);
# - the crop: 518 = 37 x 14, a multiple of the patch (UniMatch V2's crop);
# - the optimiser, from UniMatch V2 (Yang et al. 2024, configs/pascal.yaml
#   and unimatch_v2.py of its release): AdamW, betas (0.9, 0.999), weight
#   decay 0.01, encoder lr 5e-6 and 40x that (2e-4) for everything else,
#   poly decay (power 0.9) per iteration, no layer-wise decay (UniMatch V2
#   uses none; the 40x split between encoder and heads plays that role).
# Leaf configs (configs/dinov2/u2pl_*_voc-*) set the split lists.
_base_ = './paper_voc_u2pl.py'
crop_size = (518, 518)
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
            img_size=518,
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
            num_classes=21,
            norm_cfg=norm_cfg,
            align_corners=False,
            loss_decode=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole')))
# the paper's augmentation at the ViT's crop
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(500, 500),
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
        scale=(500, 500),
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
    # the encoder at 5e-6 = 2e-4 / 40; the keys match by substring, so
    # 'backbone' hits the student's `student.backbone.*` only
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1 / 40)}))
