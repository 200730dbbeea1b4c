# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# U2PL on VOC classic 366 with a SegFormer student: MiT-B2 backbone and
# SegFormer's all-MLP head. The representation head reads the 256-channel
# stride-4 map the SegFormer head feeds to its classifier (in_channels is
# inferred). Optimiser as in SegFormer (AdamW, no decay on norms and
# positional blocks, heads x10); the poly schedule is the paper's.
_base_ = '../voc/u2pl_deeplabv3plus_r101-d8_4xb4+4-80e_voc-classic-366-513x513.py'  # noqa
checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/mit_b2_20220624-66e8bf70.pth'  # noqa
model = dict(
    segmentor=dict(
        backbone=dict(
            _delete_=True,
            type='MixVisionTransformer',
            in_channels=3,
            embed_dims=64,
            num_stages=4,
            num_layers=[3, 4, 6, 3],
            num_heads=[1, 2, 5, 8],
            patch_sizes=[7, 3, 3, 3],
            sr_ratios=[8, 4, 2, 1],
            out_indices=(0, 1, 2, 3),
            mlp_ratio=4,
            qkv_bias=True,
            drop_rate=0.0,
            attn_drop_rate=0.0,
            drop_path_rate=0.1,
            init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
        decode_head=dict(
            _delete_=True,
            type='SegformerHead',
            in_channels=[64, 128, 320, 512],
            in_index=[0, 1, 2, 3],
            channels=256,
            dropout_ratio=0.1,
            num_classes=21,
            norm_cfg=_base_.norm_cfg,
            align_corners=False,
            loss_decode=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0))))
optim_wrapper = dict(
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=6e-5,
        betas=(0.9, 0.999),
        weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={
        'pos_block': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.)
    }))
