_base_ = './deeplabv3plus_r18-d8_1xb4-2k_toy-1-16-64x64.py'
train_dataloader = dict(dataset=dict(ann_file='splits/labeled_1-8.txt'))
