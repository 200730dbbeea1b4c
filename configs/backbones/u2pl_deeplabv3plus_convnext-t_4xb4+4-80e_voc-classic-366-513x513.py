# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# U2PL on VOC classic 366 with an mmpretrain backbone: ConvNeXt-T (ImageNet-
# 1k weights from OpenMMLab) under the paper's DeepLabV3+ decoder. Needs
# mmpretrain (and so torchvision, which mmpretrain.models imports).
# ConvNeXt has no dilation: its last stage is at stride 32 (16x16 features
# for a 513 crop), so the ASPP rates are divided by 4 from (12, 24, 36).
_base_ = '../voc/u2pl_deeplabv3plus_r101-d8_4xb4+4-80e_voc-classic-366-513x513.py'  # noqa
custom_imports = dict(
    imports=['mmseg_u2pl', 'mmpretrain.models'], allow_failed_imports=False)
checkpoint = 'https://download.openmmlab.com/mmclassification/v0/convnext/downstream/convnext-tiny_3rdparty_32xb128-noema_in1k_20220301-795e9634.pth'  # noqa
model = dict(
    segmentor=dict(
        backbone=dict(
            _delete_=True,
            type='mmpretrain.ConvNeXt',  # from mmpretrain's registry
            arch='tiny',
            out_indices=[0, 1, 2, 3],
            drop_path_rate=0.4,
            layer_scale_init_value=1.0,
            gap_before_final_norm=False,
            init_cfg=dict(
                type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
        decode_head=dict(
            in_channels=768, c1_in_channels=96, dilations=(3, 6, 9))))
optim_wrapper = dict(
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=1e-4,
        betas=(0.9, 0.999),
        weight_decay=0.05))
