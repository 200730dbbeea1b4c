# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# U2PL, Cityscapes: 744 labeled of the 2,975 training images, the other
# 2,231 unlabeled.
_base_ = '../_base_/paper_cityscapes_u2pl.py'
train_dataloader = dict(
    dataset=dict(
        labeled=dict(ann_file='splits/cityscapes/744/labeled.txt'),
        unlabeled=dict(ann_file='splits/cityscapes/744/unlabeled.txt')))
