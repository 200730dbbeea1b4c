# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# U2PL with a DINOv2 ViT-B/14 student, Cityscapes: 744 labeled of the
# 2,975 training images, the others unlabeled.
_base_ = '../_base_/paper_cityscapes_u2pl_dinov2.py'
train_dataloader = dict(
    dataset=dict(
        labeled=dict(ann_file='splits/cityscapes/744/labeled.txt'),
        unlabeled=dict(ann_file='splits/cityscapes/744/unlabeled.txt')))
