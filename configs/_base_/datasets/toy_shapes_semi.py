# The toy dataset as labeled + unlabeled pairs for semi-supervised training.
_base_ = './toy_shapes.py'

# The unlabeled side loads its labels only because the toy dataset has them:
# they are carried for diagnostics (pseudo-label accuracy) and never reach a
# loss. For a real unlabeled set drop LoadAnnotations and seg_map_path.
unlabeled_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(96, 96),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=(64, 64)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4,  # per GPU: 4 labeled + 4 unlabeled images
    dataset=dict(
        _delete_=True,
        type='SemiDataset',
        labeled=dict(
            type='ToyShapesDataset',
            data_root='data/toy',
            ann_file='splits/labeled_1-16.txt',
            pipeline=_base_.train_pipeline),
        unlabeled=dict(
            type='ToyShapesDataset',
            data_root='data/toy',
            ann_file='splits/unlabeled_1-16.txt',
            pipeline=unlabeled_pipeline)))
