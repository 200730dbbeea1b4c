# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# PASCAL VOC 2012 + SBD ("aug", 10,582 training images), supervised: the
# labeled images of a split (paper Sec. 4.1).
# Layout below `data_root` (docs/data_preparation.md):
#   VOCdevkit/VOC2012/JPEGImages/<id>.jpg
#   VOCdevkit/VOC2012/SegmentationClassAug/<id>.png   (train labels)
#   VOCdevkit/VOC2012/SegmentationClass/<id>.png      (val labels)
#   VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt  (1,449 val ids)
#   splits/voc/<n>/labeled.txt, unlabeled.txt
#     (written by tools/dataset_converters/convert_u2pl_splits.py)
# All paths are relative to `data_root`, so one override moves everything:
#   --cfg-options train_dataloader.dataset.data_root=/datasets ...
dataset_type = 'PascalVOCDataset'
data_root = 'data'
crop_size = (513, 513)
voc_img_path = 'VOCdevkit/VOC2012/JPEGImages'
voc_seg_map_path = 'VOCdevkit/VOC2012/SegmentationClassAug'

# Random rescale by a ratio in [0.5, 2.0] of the original size: VOC images
# are at most 500 pixels on their long side, and `keep_ratio` fits the long
# side to 500 * ratio. Then a random 513x513 crop (smaller images are padded
# by the data preprocessor: image 0, label 255) and a horizontal flip.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(500, 500),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
# The same geometric augmentation without labels: unlabeled images need no
# label file.
unlabeled_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResize',
        scale=(500, 500),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
# Single scale, whole image, original resolution.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]

train_dataloader = dict(
    batch_size=4,  # per GPU
    num_workers=4,
    persistent_workers=True,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path=voc_img_path, seg_map_path=voc_seg_map_path),
        ann_file='splits/voc/1464/labeled.txt',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path=voc_img_path,
            seg_map_path='VOCdevkit/VOC2012/SegmentationClass'),
        ann_file='VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
