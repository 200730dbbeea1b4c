# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# Source-only baseline for GTA5 -> Cityscapes: the paper network trained on
# the labeled GTA5 frames only, evaluated on Cityscapes val. 24 epochs over
# the 24,966 frames (1,560 iterations each on 8 GPUs x 2) are about the
# 37,200 iterations of the U2PL+ run (200 epochs x 186).
_base_ = [
    '../_base_/paper_cityscapes_supervised.py',
    '../_base_/datasets/gta_source.py'
]
max_epochs = 24
train_dataloader = dict(dataset=dict(_delete_=True, **_base_.gta_labeled))
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=0.,
        power=0.9,
        begin=0,
        end=max_epochs,
        by_epoch=True,
        convert_to_iter_based=True)
]
