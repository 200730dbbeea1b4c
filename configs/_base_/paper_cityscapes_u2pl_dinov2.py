# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# U2PL on Cityscapes with a DINOv2 ViT-B/14 student. Everything U2PL sets
# (pseudo-labels, entropy filtering, the contrastive loss and its memory
# bank, EMA 0.99 from the first iteration, CutMix, OHEM on the labeled
# images, 200 epochs of 2 + 2 images on 8 GPUs) is the paper's, inherited
# from paper_cityscapes_u2pl.py. The student and its optimiser are those of
# models/upernet_dinov2-b.py (sources stated there), with 19 classes and
# the paper's OHEM; the crop is 798 = 57 x 14 (UniMatch V2's Cityscapes
# crop, a multiple of the patch), and validation slides a 798 window with
# stride 532 = 38 x 14 over the full 1024x2048 images. The paper's
# auxiliary FCN head on ResNet stage 3 has no counterpart here (UniMatch V2
# uses none). Leaf configs (configs/dinov2/u2pl_*_cityscapes-*) set the
# split lists.
_base_ = ['./paper_cityscapes_u2pl.py', './models/upernet_dinov2-b.py']
custom_imports = dict(
    imports=['mmseg_u2pl', 'mmpretrain.models'], allow_failed_imports=False)
crop_size = (798, 798)
data_preprocessor = dict(size=crop_size)  # the top-level copy, kept in step
model = dict(
    segmentor=dict(
        _base_.dinov2_student,
        _delete_=True,
        data_preprocessor=dict(
            _base_.dinov2_student['data_preprocessor'], size=crop_size),
        decode_head=dict(
            _base_.dinov2_student['decode_head'],
            num_classes=19,
            # OHEM as the paper's Cityscapes network (threshold 0.7, at
            # least 50,000 kept pixels per image, mean over kept pixels)
            sampler=_base_.ohem_sampler,
            loss_decode=dict(type='OHEMCrossEntropyLoss', loss_weight=1.0)),
        test_cfg=dict(mode='slide', crop_size=crop_size, stride=(532, 532))))
optim_wrapper = dict(_base_.dinov2_optim_wrapper, _delete_=True)
train_dataloader = dict(
    dataset=dict(
        labeled=dict(pipeline=[
            dict(t, crop_size=crop_size) if t['type'] == 'RandomCrop' else t
            for t in _base_.train_pipeline
        ]),
        unlabeled=dict(pipeline=[
            dict(t, crop_size=crop_size) if t['type'] == 'RandomCrop' else t
            for t in _base_.unlabeled_pipeline
        ])))
