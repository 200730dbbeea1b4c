# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# Supervised only, PASCAL VOC classic split: the 732 labeled images.
_base_ = '../_base_/paper_voc_supervised.py'
train_dataloader = dict(dataset=dict(ann_file='splits/voc/732/labeled.txt'))
