# The toy's AdamW + poly schedule (schedule_toy.py) for ToyShapes21, whose
# backbone starts from pretrained weights: the backbone learns at 0.1x the
# rate of the heads, as the paper's VOC setting trains its decoder and
# representation head at 10x the backbone's rate (paper_voc_80e.py).
_base_ = './schedule_toy.py'
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
