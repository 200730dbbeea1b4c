# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# U2PL, PASCAL VOC blender split: 662 labeled images drawn from all
# 10,582 training images, the other 9,920 unlabeled.
_base_ = '../_base_/paper_voc_u2pl.py'
train_dataloader = dict(
    dataset=dict(
        labeled=dict(ann_file='splits/voc/662/labeled.txt'),
        unlabeled=dict(ann_file='splits/voc/662/unlabeled.txt')))
