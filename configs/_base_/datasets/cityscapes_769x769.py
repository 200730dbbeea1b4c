# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# Cityscapes (2,975 finely annotated training images), supervised: the
# labeled images of a split (paper Sec. 4.1).
# Layout below `data_root` (docs/data_preparation.md):
#   cityscapes/leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png
#   cityscapes/gtFine/{train,val}/<city>/<name>_gtFine_labelTrainIds.png
#     (train ids, written by mmseg's tools/dataset_converters/cityscapes.py)
#   splits/cityscapes/<n>/labeled.txt, unlabeled.txt: '<city>/<name>' lines
#     (tools/dataset_converters/convert_u2pl_splits.py)
dataset_type = 'CityscapesDataset'
data_root = 'data'
crop_size = (769, 769)
cityscapes_train_img_path = 'cityscapes/leftImg8bit/train'
cityscapes_train_seg_map_path = 'cityscapes/gtFine/train'

# Random rescale by a ratio in [0.5, 2.0] of the original 2048x1024 size,
# a random 769x769 crop and a horizontal flip.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(2048, 1024),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
unlabeled_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResize',
        scale=(2048, 1024),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
# Full 1024x2048 images; the model slides a 769 window with stride 513.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]

train_dataloader = dict(
    batch_size=2,  # per GPU
    num_workers=4,
    persistent_workers=True,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path=cityscapes_train_img_path,
            seg_map_path=cityscapes_train_seg_map_path),
        ann_file='splits/cityscapes/744/labeled.txt',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        # all 500 validation images (no split list needed)
        data_prefix=dict(
            img_path='cityscapes/leftImg8bit/val',
            seg_map_path='cityscapes/gtFine/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
