# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# Cityscapes as labeled + unlabeled pairs (paper Sec. 4.1). An epoch
# is one pass over the unlabeled images.
_base_ = './cityscapes_769x769.py'
train_dataloader = dict(
    batch_size=2,  # per GPU: 2 labeled + 2 unlabeled images
    dataset=dict(
        _delete_=True,
        type='SemiDataset',
        labeled=dict(
            type=_base_.dataset_type,
            data_root=_base_.data_root,
            data_prefix=dict(
                img_path=_base_.cityscapes_train_img_path,
                seg_map_path=_base_.cityscapes_train_seg_map_path),
            ann_file='splits/cityscapes/744/labeled.txt',
            pipeline=_base_.train_pipeline),
        unlabeled=dict(
            type=_base_.dataset_type,
            data_root=_base_.data_root,
            # images only: no label file is read (nor needed)
            data_prefix=dict(img_path=_base_.cityscapes_train_img_path),
            ann_file='splits/cityscapes/744/unlabeled.txt',
            pipeline=_base_.unlabeled_pipeline)))
