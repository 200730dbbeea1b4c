# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# The DINOv2 ViT-B/14 student of the DINOv2 recipe (paper_*_u2pl_dinov2.py)
# and its optimiser, under names of their own so that a U2PL base can take
# them (`_base_.dinov2_student`) next to the paper's network.
# - encoder: mmpretrain's VisionTransformer with OpenMMLab's conversion of
#   the DINOv2-B weights (patch 14, layer scale); blocks 3, 6, 9 and 12
#   brought to strides 4, 8, 16 and 32 by mmseg's MultiLevelNeck, decoded
#   by UPerHead (512 channels: the representation head's input, as the
#   paper's 512-d fused DeepLabV3+ features);
# - optimiser, from UniMatch V2 (Yang et al. 2024, configs/pascal.yaml and
#   unimatch_v2.py of its release): AdamW, betas (0.9, 0.999), weight decay
#   0.01, encoder lr 5e-6 and 40x that (2e-4) for everything else, no
#   layer-wise decay (UniMatch V2 uses none; the 40x split between encoder
#   and heads plays that role).
dinov2_checkpoint = 'https://download.openmmlab.com/mmpretrain/v1.0/dinov2/vit-base-p14_dinov2-pre_3rdparty_20230426-ba246503.pth'  # noqa
dinov2_student = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(518, 518)),
    backbone=dict(
        type='mmpretrain.VisionTransformer',  # mmpretrain's registry
        arch='base',  # DINOv2-B: 768 channels, 12 blocks, 12 heads
        img_size=518,  # the checkpoint's position grid, resized to fit
        patch_size=14,
        layer_scale_init_value=1e-5,
        out_indices=(2, 5, 8, 11),
        out_type='featmap',
        init_cfg=dict(
            type='Pretrained', checkpoint=dinov2_checkpoint,
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
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
dinov2_optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.01),
    clip_grad=None,
    # the encoder at 5e-6 = 2e-4 / 40; the keys match by substring, so
    # 'backbone' hits the student's `student.backbone.*` only
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1 / 40)}))
