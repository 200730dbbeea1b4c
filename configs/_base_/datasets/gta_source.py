# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# GTA5 (24,966 synthetic 1914x1052 frames) as a labeled source domain for
# U2PL+ domain adaptation to Cityscapes (U2PL+ paper). This file only
# defines `gta_labeled`, a dataset config that the gta2cityscapes configs
# put into `train_dataloader` (as the labeled side of SemiDataset, or alone
# for the source-only baseline); validation stays on Cityscapes val.
#
# GTA5 labels hold Cityscapes *label ids*; convert them to the 19 Cityscapes
# train ids first (docs/data_preparation.md, "GTA5"), which writes
# `gta/labels/<name>_labelTrainIds.png` next to `gta/labels/<name>.png`.
# mmseg 1.2.2 has no GTA dataset class: `CityscapesDataset` with GTA paths
# and suffixes reads it and gives both domains the same 19 class names,
# which SemiDataset requires.
gta_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    # rescale to about Cityscapes' 2048x1024 times a ratio in [0.5, 2.0],
    # like the target images, then the same 769x769 crop and flip
    dict(
        type='RandomResize',
        scale=(2048, 1024),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=(769, 769)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
gta_labeled = dict(
    type='CityscapesDataset',
    data_root='data',
    data_prefix=dict(img_path='gta/images', seg_map_path='gta/labels'),
    img_suffix='.png',
    seg_map_suffix='_labelTrainIds.png',
    # no ann_file: every image of gta/images (the full GTA5 set)
    pipeline=gta_train_pipeline)
