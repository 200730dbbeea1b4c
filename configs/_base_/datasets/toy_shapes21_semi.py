# ToyShapes21 as labeled + unlabeled pairs for semi-supervised training
# (the unlabeled side carries its labels for diagnostics only, as in
# toy_shapes_semi.py).
_base_ = './toy_shapes_semi.py'
dataset_type = 'ToyShapes21Dataset'
data_root = 'data/toy21'
split = '1-16'  # labeled fraction: 1-32, 1-16, 1-8, 1-4, 1-2

train_dataloader = dict(
    dataset=dict(
        labeled=dict(
            type=dataset_type,
            data_root=data_root,
            ann_file=f'splits/labeled_{split}.txt'),
        unlabeled=dict(
            type=dataset_type,
            data_root=data_root,
            ann_file=f'splits/unlabeled_{split}.txt')))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
test_dataloader = val_dataloader
