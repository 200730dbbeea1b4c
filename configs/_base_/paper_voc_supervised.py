# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# Supervised-only baseline of the U2PL paper on PASCAL VOC: the paper
# network and optimisation, trained on the labeled images of a split only.
# Leaf configs (configs/voc/deeplabv3plus_*) set the split list.
_base_ = [
    './models/paper_deeplabv3plus_r101-d8.py', './datasets/voc_aug.py',
    './default_runtime.py', './schedules/paper_voc_80e.py'
]
log_processor = dict(by_epoch=True)
