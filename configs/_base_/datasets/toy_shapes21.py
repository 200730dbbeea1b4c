# ToyShapes21 (tools/dataset_converters/make_toy_dataset.py --dataset toy21
# writes it):
# 96x96 images, 20 object classes in 5 confusable groups + background, a
# long-tailed class frequency; the toy's pipeline and layout.
_base_ = './toy_shapes.py'
dataset_type = 'ToyShapes21Dataset'
data_root = 'data/toy21'
split = '1-16'  # labeled fraction: 1-32, 1-16, 1-8, 1-4, 1-2, 1

train_dataloader = dict(
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file=f'splits/labeled_{split}.txt'))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
test_dataloader = val_dataloader
