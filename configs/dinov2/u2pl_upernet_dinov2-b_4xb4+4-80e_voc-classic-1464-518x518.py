# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# U2PL with a DINOv2 ViT-B/14 student, PASCAL VOC classic split: 1464
# labeled images, the rest of the 10,582 training images unlabeled.
_base_ = '../_base_/paper_voc_u2pl_dinov2.py'
train_dataloader = dict(
    dataset=dict(
        labeled=dict(ann_file='splits/voc/1464/labeled.txt'),
        unlabeled=dict(ann_file='splits/voc/1464/unlabeled.txt')))
