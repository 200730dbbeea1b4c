# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# U2PL, Cityscapes: 1,488 labeled of the 2,975 training images, the other
# 1,487 unlabeled.
_base_ = '../_base_/paper_cityscapes_u2pl.py'
train_dataloader = dict(
    dataset=dict(
        labeled=dict(ann_file='splits/cityscapes/1488/labeled.txt'),
        unlabeled=dict(ann_file='splits/cityscapes/1488/unlabeled.txt')))
