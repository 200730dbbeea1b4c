# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# U2PL+ domain adaptation (U2PL+ paper), GTA5 -> Cityscapes: the
# labeled set is the synthetic GTA5 source (24,966 frames, labels converted
# to the 19 Cityscapes train ids), the unlabeled set all 2,975 Cityscapes
# training images (no labels read); validation on Cityscapes val with the
# teacher (sliding window). Everything else is the paper's Cityscapes
# recipe: network, OHEM, auxiliary head, SGD lr 0.01, 200 epochs over the
# unlabeled (target) images, no warm-up. The papers give no
# separate hyper-parameters or reference mIoU for this setting.
#
# Caveat (mmseg_u2pl SemiDataset): an epoch pairs every unlabeled image
# with one labeled image drawn by a permutation fixed at construction, so
# when the labeled set is larger than the unlabeled one (here 24,966 vs
# 2,975) only 2,975 of the GTA5 frames are ever used.
_base_ = [
    '../_base_/paper_cityscapes_u2pl.py', '../_base_/datasets/gta_source.py'
]
train_dataloader = dict(
    dataset=dict(
        labeled=dict(_delete_=True, **_base_.gta_labeled),
        # no split list: every image of cityscapes/leftImg8bit/train
        unlabeled=dict(ann_file='')))
