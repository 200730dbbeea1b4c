# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# Supervised only, Cityscapes: the 186 labeled training images.
_base_ = '../_base_/paper_cityscapes_supervised.py'
train_dataloader = dict(
    dataset=dict(ann_file='splits/cityscapes/186/labeled.txt'))
