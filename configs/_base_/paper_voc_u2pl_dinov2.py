# Copyright (c) mmseg_u2pl contributors. All rights reserved.
# U2PL on PASCAL VOC with a DINOv2 ViT-B/14 student. Everything U2PL sets
# (pseudo-labels, entropy filtering, the contrastive loss and its memory
# bank, EMA 0.99, warm-up, CutMix, 80 epochs of 4 + 4 images on 4 GPUs) is
# the paper's, inherited from paper_voc_u2pl.py. What changes is what a
# plain ViT needs: the student and its optimiser
# (models/upernet_dinov2-b.py, with their sources) and the crop, 518 =
# 37 x 14, a multiple of the patch (UniMatch V2's VOC crop). Leaf configs
# (configs/dinov2/u2pl_*_voc-*) set the split lists.
_base_ = ['./paper_voc_u2pl.py', './models/upernet_dinov2-b.py']
custom_imports = dict(
    imports=['mmseg_u2pl', 'mmpretrain.models'], allow_failed_imports=False)
crop_size = (518, 518)
data_preprocessor = dict(size=crop_size)  # the top-level copy, kept in step
model = dict(segmentor=dict(_base_.dinov2_student, _delete_=True))
optim_wrapper = dict(_base_.dinov2_optim_wrapper, _delete_=True)
# the paper's augmentation at the ViT's crop
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
