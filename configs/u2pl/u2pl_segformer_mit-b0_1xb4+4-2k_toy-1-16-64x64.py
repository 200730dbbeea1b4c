# Full U2PL with a SegFormer (MiT-B0) student instead of DeepLabV3+: only the
# segmentor changes. The representation head reads the features SegFormer's
# head feeds to its classifier (its fused `channels`-d map at stride 4).
_base_ = './u2pl_deeplabv3plus_r18-d8_1xb4+4-2k_toy-1-16-64x64.py'
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    segmentor=dict(
        _delete_=True,
        type='EncoderDecoder',
        data_preprocessor=_base_.data_preprocessor,
        # for real data: init_cfg=dict(type='Pretrained', checkpoint=
        # 'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/'
        # 'segformer/mit_b0_20220624-7e0fe6dd.pth') on the backbone
        backbone=dict(
            type='MixVisionTransformer',
            in_channels=3,
            embed_dims=32,
            num_stages=4,
            num_layers=[2, 2, 2, 2],
            num_heads=[1, 2, 5, 8],
            patch_sizes=[7, 3, 3, 3],
            sr_ratios=[8, 4, 2, 1],
            out_indices=(0, 1, 2, 3),
            mlp_ratio=4,
            qkv_bias=True,
            drop_rate=0.0,
            attn_drop_rate=0.0,
            drop_path_rate=0.1),
        decode_head=dict(
            type='SegformerHead',
            in_channels=[32, 64, 160, 256],
            in_index=[0, 1, 2, 3],
            channels=128,
            dropout_ratio=0.1,
            num_classes=6,
            norm_cfg=norm_cfg,
            align_corners=False,
            loss_decode=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole')))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-4, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys=dict(
        pos_block=dict(decay_mult=0.), norm=dict(decay_mult=0.),
        head=dict(lr_mult=10.))))
