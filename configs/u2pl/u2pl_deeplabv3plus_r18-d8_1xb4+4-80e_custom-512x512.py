# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# U2PL on your own dataset: one complete config, no base files.
#
# Expected layout (names in the split lists are image paths below
# `train_img_dir`, without the suffix; tools/dataset_converters/make_splits.py
# writes both lists):
#
#   data/my_dataset/
#   ├── images/train/*.jpg      labeled and unlabeled training images
#   ├── images/val/*.jpg
#   ├── masks/train/*.png       masks of the labeled training images only
#   ├── masks/val/*.png
#   └── splits/labeled.txt, splits/unlabeled.txt
#
# Masks hold class indices 0..C-1, 255 = ignored. Edit the block below;
# nothing else needs to change. Train with
#   python tools/train.py configs/u2pl/u2pl_deeplabv3plus_r18-d8_1xb4+4-80e_custom-512x512.py  # noqa

# ----------------------------- edit this block -----------------------------
data_root = 'data/my_dataset'
train_img_dir = 'images/train'  # labeled and unlabeled training images
train_mask_dir = 'masks/train'  # masks of the labeled images only
val_img_dir = 'images/val'
val_mask_dir = 'masks/val'
img_suffix = '.jpg'
mask_suffix = '.png'  # class indices 0..C-1, 255 = ignored
labeled_list = 'splits/labeled.txt'
unlabeled_list = 'splits/unlabeled.txt'
classes = ('background', 'foreground')
palette = [[0, 0, 0], [255, 0, 0]]  # one RGB colour per class
# ---------------------------------------------------------------------------

num_classes = len(classes)
metainfo = dict(classes=classes, palette=palette)
crop_size = (512, 512)
scale = (2048, 512)  # images are rescaled to fit it, then x0.5-2.0
# Schedule in epochs, as in the paper: an epoch is one pass over the
# unlabeled images (SemiDataset's length, the larger side), so the number of
# iterations follows from the data: unlabeled images // (GPUs x batch_size)
# per epoch, the last partial batch dropped. E.g. 1,140 unlabeled images on
# 1 GPU x 4: 285 iterations per epoch, 22,800 in all; the log prints the
# iterations per epoch (`Epoch(train)  [1][ 50/285]`). N epochs instead:
#   --cfg-options train_cfg.max_epochs=N param_scheduler.0.end=N
# (both: --cfg-options does not re-evaluate `max_epochs` where it is used).
max_epochs = 80  # paper, VOC
val_interval = 4  # epochs, validation and checkpoint (paper configs)

default_scope = 'mmseg'
custom_imports = dict(imports=['mmseg_u2pl'], allow_failed_imports=False)

# Model: the student is mmseg's DeepLabV3+ on ResNet-18-V1c (ImageNet
# weights); U2PL adds the EMA teacher, CutMix, the entropy-filtered
# unsupervised loss and the contrastive term.
norm_cfg = dict(type='SyncBN', requires_grad=True)  # BN without CUDA
student = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=crop_size),
    backbone=dict(
        type='ResNetV1c',
        depth=18,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        dilations=(1, 1, 2, 4),
        strides=(1, 2, 1, 1),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        contract_dilation=True,
        init_cfg=dict(
            type='Pretrained', checkpoint='open-mmlab://resnet18_v1c')),
    decode_head=dict(
        type='DepthwiseSeparableASPPHead',
        in_channels=512,
        in_index=3,
        channels=128,
        dilations=(1, 12, 24, 36),
        c1_in_channels=64,
        c1_channels=12,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
model = dict(
    type='U2PL',
    segmentor=student,
    representation_head=dict(
        type='RepresentationHead',
        channels=256,
        out_channels=256,
        norm_cfg=norm_cfg),
    contrastive_loss=dict(
        type='UnreliableContrastiveLoss',
        memory_size=30000,
        num_anchors=256,
        num_negatives=50,
        temperature=0.5,
        delta_p=0.3,
        rank_low=3,
        rank_high=20,
        loss_weight=0.1),
    semi_train_cfg=dict(
        unsup_weight=1.0,
        alpha_0=20,
        cutmix=dict(prob=0.5, area_ratio=0.5, per_sample=False)),
    semi_test_cfg=dict(predict_on='teacher'))

# Data: 4 labeled + 4 unlabeled images per GPU and iteration, the same
# geometric augmentation on both sides.
augmentation = [  # the same geometric augmentation on both sides
    dict(
        type='RandomResize',
        scale=scale,
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
] + augmentation
unlabeled_pipeline = [dict(type='LoadImageFromFile')] + augmentation
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='SemiDataset',
        labeled=dict(
            type='BaseSegDataset',
            metainfo=metainfo,
            data_root=data_root,
            data_prefix=dict(
                img_path=train_img_dir, seg_map_path=train_mask_dir),
            img_suffix=img_suffix,
            seg_map_suffix=mask_suffix,
            ann_file=labeled_list,
            pipeline=train_pipeline),
        unlabeled=dict(
            type='BaseSegDataset',
            metainfo=metainfo,
            data_root=data_root,
            data_prefix=dict(img_path=train_img_dir),  # no masks are read
            img_suffix=img_suffix,
            ann_file=unlabeled_list,
            pipeline=unlabeled_pipeline)))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='BaseSegDataset',
        metainfo=metainfo,
        data_root=data_root,
        data_prefix=dict(img_path=val_img_dir, seg_map_path=val_mask_dir),
        img_suffix=img_suffix,
        seg_map_suffix=mask_suffix,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# Schedule: SGD with poly decay, updated every iteration, as mmseg's
# DeepLabV3+ configs and the paper's Cityscapes setting (lr for 4 + 4 images
# on one GPU).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4),
    clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=max_epochs,
        by_epoch=True,
        convert_to_iter_based=True)
]
auto_scale_lr = dict(enable=False, base_batch_size=4)
train_cfg = dict(
    type='EpochBasedTrainLoop',
    max_epochs=max_epochs,
    val_interval=val_interval)
# validates both networks (teacher/mIoU, student/mIoU) and names the better
# one (better/mIoU); the best checkpoint is the best of either, and
# tools/model_converters/export_checkpoint.py exports the better network
val_cfg = dict(type='TeacherStudentValLoop')
test_cfg = dict(type='TestLoop')
custom_hooks = [
    # 1 epoch of supervised-only warm-up (paper, VOC), then EMA with decay
    # up to 0.99 (paper): a time constant of 1 / (1 - 0.99) = 100
    # iterations, 0.4 % of the 22,800 above. The toy configs' 0.999 is set
    # for the toy datasets, not a default for other data.
    dict(type='MeanTeacherHook', warmup_epochs=1, max_decay=0.99),
    dict(type='PseudoLabelVisualizationHook', interval=1000, num_images=4),
]

# Runtime
runner_type = 'ExactResumeRunner'  # bit-exact --resume, atomic checkpoints
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=True),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=True,
        interval=val_interval,
        max_keep_ckpts=2,
        save_best='better/mIoU',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]  # + TensorboardVisBackend
visualizer = dict(
    type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
