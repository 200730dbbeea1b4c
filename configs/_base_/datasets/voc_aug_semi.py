# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# PASCAL VOC 2012 + SBD as labeled + unlabeled pairs (paper Sec. 4.1).
# An epoch is one pass over the unlabeled images; the labeled ones are
# re-sampled to that length by SemiDataset.
_base_ = './voc_aug.py'
train_dataloader = dict(
    batch_size=4,  # per GPU: 4 labeled + 4 unlabeled images
    dataset=dict(
        _delete_=True,
        type='SemiDataset',
        labeled=dict(
            type=_base_.dataset_type,
            data_root=_base_.data_root,
            data_prefix=dict(
                img_path=_base_.voc_img_path,
                seg_map_path=_base_.voc_seg_map_path),
            ann_file='splits/voc/1464/labeled.txt',
            pipeline=_base_.train_pipeline),
        unlabeled=dict(
            type=_base_.dataset_type,
            data_root=_base_.data_root,
            # images only: no label file is read (nor needed)
            data_prefix=dict(img_path=_base_.voc_img_path),
            ann_file='splits/voc/1464/unlabeled.txt',
            pipeline=_base_.unlabeled_pipeline)))
