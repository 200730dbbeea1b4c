# Supervised-only baseline: the labeled 1/16 of ToyShapes21 (32 images),
# from the pretrained backbone.
_base_ = [
    '../_base_/models/deeplabv3plus_r18-d8_toy21.py',
    '../_base_/datasets/toy_shapes21.py', '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_toy21.py'
]
