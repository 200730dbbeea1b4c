# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# U2PL on VOC classic 366 with a ResNet-50 instead of the paper's ResNet-101:
# mmseg's ResNetV1c-50 (deep stem of 64 channels, as mmseg's ImageNet
# weights expect; the stage outputs keep 256 / 2048 channels, so the
# decoder is unchanged). Train any other split by changing the base.
_base_ = '../voc/u2pl_deeplabv3plus_r101-d8_4xb4+4-80e_voc-classic-366-513x513.py'  # noqa
model = dict(
    segmentor=dict(
        backbone=dict(
            depth=50,
            stem_channels=64,
            init_cfg=dict(checkpoint='open-mmlab://resnet50_v1c'))))
