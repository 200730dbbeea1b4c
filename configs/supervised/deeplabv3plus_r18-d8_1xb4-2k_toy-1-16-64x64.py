# Supervised-only baseline: the labeled 1/16 of the toy dataset.
_base_ = [
    '../_base_/models/deeplabv3plus_r18-d8_toy.py',
    '../_base_/datasets/toy_shapes.py', '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_toy.py'
]
train_dataloader = dict(dataset=dict(ann_file='splits/labeled_1-16.txt'))
