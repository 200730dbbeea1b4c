# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# Supervised-only baseline of the U2PL paper on Cityscapes: the paper
# network (OHEM, auxiliary head, sliding-window evaluation) and
# optimisation, trained on the labeled images of a split only. Leaf configs
# (configs/cityscapes/deeplabv3plus_*) set the split list.
_base_ = [
    './models/paper_deeplabv3plus_r101-d8_cityscapes.py',
    './datasets/cityscapes_769x769.py', './default_runtime.py',
    './schedules/paper_cityscapes_200e.py'
]
log_processor = dict(by_epoch=True)
