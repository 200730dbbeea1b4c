# Upper bound: every ToyShapes21 training image labeled.
_base_ = './deeplabv3plus_r18-d8_1xb4-1k_toy21-1-16-64x64.py'
train_dataloader = dict(dataset=dict(ann_file='splits/train.txt'))
