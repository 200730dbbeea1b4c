# The toy's AdamW + poly schedule (schedule_toy.py) for ToyShapes21, whose
# backbone starts from pretrained weights: 1,000 iterations (the benchmark's
# 42 trainings fit in about 100 minutes on 2 CPU cores), and the backbone
# learns at 0.1x the rate of the heads, as the paper's VOC setting trains
# its decoder and representation head at 10x the backbone's rate
# (paper_voc_80e.py).
_base_ = './schedule_toy.py'
max_iters = 1000
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(max_iters=max_iters)
