# U2PL without the contrastive term on ToyShapes21, 1/16 of the labels:
# mean teacher + CutMix + the entropy-filtered unsupervised loss.
_base_ = [
    '../_base_/models/deeplabv3plus_r18-d8_toy21.py',
    '../_base_/datasets/toy_shapes21_semi.py', '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_toy21.py'
]
model = dict(
    _delete_=True,
    type='U2PL',
    segmentor=_base_.model,
    # the paper's lambda_u = 1, alpha_0 = 20 % and CutMix (p = 0.5, half the
    # area, one decision per batch): U2PL's defaults
    semi_train_cfg=dict(),
    semi_test_cfg=dict(predict_on='teacher'))
custom_hooks = [
    # a supervised warm-up of a quarter of the iterations: the backbone is
    # pretrained (the paper's warm-up is 1 of 80 epochs); EMA capped at 0.999
    dict(type='MeanTeacherHook', warmup_iters=250, max_decay=0.999),
    dict(type='PseudoLabelVisualizationHook', interval=500, num_images=4),
]
val_cfg = dict(_delete_=True, type='TeacherStudentValLoop')
default_hooks = dict(checkpoint=dict(save_best='teacher/mIoU', rule='greater'))
