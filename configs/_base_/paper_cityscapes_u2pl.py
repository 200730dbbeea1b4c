# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# U2PL on Cityscapes with the paper's settings (paper Sec. 3-4). Leaf
# configs (configs/cityscapes/u2pl_*) set the split lists.
_base_ = [
    './models/paper_deeplabv3plus_r101-d8_cityscapes.py',
    './datasets/cityscapes_769x769_semi.py', './default_runtime.py',
    './schedules/paper_cityscapes_200e.py'
]
model = dict(
    _delete_=True,
    type='U2PL',
    segmentor=_base_.model,  # the student: a plain mmseg segmentor
    # 512 (fused decoder features) -> 256 -> 256 -> 256-d representations;
    # in_channels is read from the decode head's classifier
    representation_head=dict(
        type='RepresentationHead',
        channels=256,
        out_channels=256,
        num_convs=2,
        dropout_ratio=0.1,
        norm_cfg=_base_.norm_cfg),
    contrastive_loss=dict(
        type='UnreliableContrastiveLoss',
        # per-class memory bank: 50000 for class 0 (road), 30000 for the
        # 18 others
        memory_size=[50000] + [30000] * 18,
        num_anchors=256,
        num_negatives=50,
        temperature=0.5,
        delta_p=0.3,
        rank_low=3,
        rank_high=20,
        loss_weight=0.1),  # lambda_c
    semi_train_cfg=dict(
        unsup_weight=1.0,  # eta of Eq. 8: lambda_u = eta * all / kept
        alpha_0=20,  # % of unreliable pixels at the start
        cutmix=dict(prob=0.5, area_ratio=0.5, per_sample=False)),
    semi_test_cfg=dict(predict_on='teacher'))
custom_hooks = [
    # no supervised-only warm-up: EMA from the first iteration
    dict(type='MeanTeacherHook', warmup_epochs=0, max_decay=0.99),
    dict(type='PseudoLabelVisualizationHook', interval=2000, num_images=4),
]
# validate teacher and student; keep the best teacher
val_cfg = dict(_delete_=True, type='TeacherStudentValLoop')
default_hooks = dict(checkpoint=dict(save_best='teacher/mIoU', rule='greater'))
log_processor = dict(by_epoch=True)
