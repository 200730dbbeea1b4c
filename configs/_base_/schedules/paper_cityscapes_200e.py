# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# Cityscapes optimisation of the paper (paper Sec. 4.1).
#
# Epochs, not iterations: an epoch is one pass over the training set of the
# config, i.e. over the *unlabeled* images for U2PL (SemiDataset's length)
# and over the labeled images for the supervised baselines, as in the
# reference code. EpochBasedTrainLoop derives the iteration count from the
# split and the number of GPUs (last partial batch dropped), so one config
# serves every split and GPU count; the poly schedule is converted to
# per-iteration. E.g. U2PL, 744 labeled on 8 GPUs x 2: 2,231 unlabeled / 16
# = 139 iterations per epoch, 27,800 in all. No supervised-only warm-up.
#
# lr is for a total batch of 16 labeled (+ 16 unlabeled) images, 8 GPUs x 2.
# With fewer GPUs keep 2 images per GPU and scale lr linearly (4 GPUs:
# lr=0.005), e.g. `--cfg-options auto_scale_lr.enable=True`.
max_epochs = 200
val_interval = 10  # epochs
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4)
# all heads at the base lr
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
# poly, power 0.9, updated every iteration, down to 0
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
auto_scale_lr = dict(enable=False, base_batch_size=16)
train_cfg = dict(
    type='EpochBasedTrainLoop',
    max_epochs=max_epochs,
    val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=True),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=True,
        interval=val_interval,
        max_keep_ckpts=2,
        save_best='mIoU',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
