_base_ = './u2pl-nocontrast_deeplabv3plus_r18-d8_1xb4+4-2k_toy-1-16-64x64.py'
train_dataloader = dict(
    dataset=dict(
        labeled=dict(ann_file='splits/labeled_1-8.txt'),
        unlabeled=dict(ann_file='splits/unlabeled_1-8.txt')))
