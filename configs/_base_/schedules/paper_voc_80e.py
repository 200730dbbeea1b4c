# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# PASCAL VOC optimisation of the paper (paper Sec. 4.1).
#
# Epochs, not iterations: an epoch is one pass over the training set of the
# config, i.e. over the *unlabeled* images for U2PL (SemiDataset's length)
# and over the labeled images for the supervised baselines, as in the
# reference code. EpochBasedTrainLoop derives the iteration count from the
# split and the number of GPUs (len(train_dataloader) = unlabeled images /
# (GPUs x batch), last partial batch dropped), so one config serves every
# split and GPU count, and the warm-up (`MeanTeacherHook(warmup_epochs=1)`)
# and the poly schedule (converted to per-iteration) follow it. E.g. U2PL,
# classic 366 on 4 GPUs x 4: 10,216 unlabeled / 16 = 638 iterations per
# epoch, 51,040 in all.
#
# lr is for a total batch of 16 labeled (+ 16 unlabeled) images, 4 GPUs x 4.
# With fewer GPUs keep 4 images per GPU and scale lr linearly (2 GPUs:
# lr=0.0005), e.g. `--cfg-options auto_scale_lr.enable=True` (mmengine
# scales by GPUs x batch_size / 16).
max_epochs = 80
val_interval = 4  # epochs
optimizer = dict(type='SGD', lr=0.001, momentum=0.9, weight_decay=1e-4)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=optimizer,
    clip_grad=None,
    # decoder and representation head x10; keys match by substring, so
    # they also hit the U2PL student's `student.decode_head.*` and
    # `student.representation_head.*` (the teacher is never optimised).
    paramwise_cfg=dict(custom_keys={
        'decode_head': dict(lr_mult=10.),
        'representation_head': dict(lr_mult=10.)
    }))
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
