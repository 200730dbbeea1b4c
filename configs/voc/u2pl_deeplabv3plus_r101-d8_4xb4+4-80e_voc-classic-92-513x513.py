# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# U2PL, PASCAL VOC classic split: 92 labeled images (of the 1,464
# finely annotated ones), the other 10,490 of the 10,582 training images
# unlabeled.
_base_ = '../_base_/paper_voc_u2pl.py'
train_dataloader = dict(
    dataset=dict(
        labeled=dict(ann_file='splits/voc/92/labeled.txt'),
        unlabeled=dict(ann_file='splits/voc/92/unlabeled.txt')))
