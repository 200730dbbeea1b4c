# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""The own-dataset template works after editing only its marked block.

The tiny toy dataset is laid out as a user's folder (training and validation
images in two folders, masks of the labeled images only, two split lists);
the template's edit block is pointed at it, and the datasets and the model
are built from the edited file.
"""
import os
import os.path as osp
import re
import shutil

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.registry import DATASETS, MODELS
from toy_fixtures import toy_data_root  # noqa: F401  (pytest fixture)
from toy_fixtures import REPO_ROOT, toy_split

import mmseg_u2pl  # noqa: F401
from mmseg_u2pl.datasets.toy_dataset import TOY_CLASSES as CLASSES
from mmseg_u2pl.datasets.toy_dataset import TOY_PALETTE as PALETTE
from mmseg_u2pl.utils.launch import convert_sync_bn

TEMPLATE = osp.join(REPO_ROOT, 'configs', 'u2pl',
                    'u2pl_deeplabv3plus_r18-d8_1xb4+4-20k_custom-512x512.py')
BEGIN = '# ----------------------------- edit this block'


def user_folder(toy_root: str, root: str) -> str:
    """Copy the toy dataset into the template's expected layout."""
    labeled = toy_split(toy_root, 'labeled_1-8')
    unlabeled = toy_split(toy_root, 'unlabeled_1-8')
    for sub in ('images/train', 'images/val', 'masks/train', 'masks/val',
                'splits'):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    for name in labeled + unlabeled:
        shutil.copy(
            osp.join(toy_root, 'images', name + '.png'),
            osp.join(root, 'images/train'))
    for name in labeled:  # unlabeled images come without masks
        shutil.copy(
            osp.join(toy_root, 'labels', name + '.png'),
            osp.join(root, 'masks/train'))
    for name in toy_split(toy_root, 'val'):
        shutil.copy(
            osp.join(toy_root, 'images', name + '.png'),
            osp.join(root, 'images/val'))
        shutil.copy(
            osp.join(toy_root, 'labels', name + '.png'),
            osp.join(root, 'masks/val'))
    for split, names in (('labeled', labeled), ('unlabeled', unlabeled)):
        with open(osp.join(root, 'splits', split + '.txt'), 'w') as f:
            f.write(''.join(n + '\n' for n in names))
    return root


def edit_block(text: str, values: dict) -> str:
    """Set ``name = value`` lines, each exactly once inside the edit block."""
    begin = text.index(BEGIN)
    end = text.index('# ----', text.index('\n', begin))
    block = text[begin:end]
    for name, value in values.items():
        block, count = re.subn(
            rf'^{name} = .*$', f'{name} = {value!r}', block, flags=re.M)
        assert count == 1, f'{name} is not a line of the edit block'
    return text[:begin] + block + text[end:]


@pytest.fixture
def edited_config(toy_data_root, tmp_path):  # noqa: F811
    root = user_folder(toy_data_root, str(tmp_path / 'my_dataset'))
    with open(TEMPLATE) as f:
        text = f.read()
    path = tmp_path / 'my_config.py'
    path.write_text(
        edit_block(
            text,
            dict(
                data_root=root,
                img_suffix='.png',
                classes=tuple(CLASSES),
                palette=[list(c) for c in PALETTE])))
    return str(path)


def test_template_defaults():
    cfg = Config.fromfile(TEMPLATE)
    labeled = cfg.train_dataloader.dataset.labeled
    assert labeled.data_root == 'data/my_dataset'
    assert labeled.ann_file == 'splits/labeled.txt'
    assert cfg.model.segmentor.decode_head.num_classes == 2


def test_edited_template_builds(edited_config):
    cfg = Config.fromfile(edited_config)
    with DefaultScope.overwrite_default_scope('mmseg'):
        train_set = DATASETS.build(cfg.train_dataloader.dataset)
        assert len(train_set.labeled) == 8
        assert len(train_set.unlabeled) == 56
        assert train_set.labeled.metainfo['classes'] == tuple(CLASSES)
        sample = train_set[0]
        # 32-px images rescaled by the template's `scale`, x0.5-2.0, then
        # cropped to at most 512 (the data preprocessor pads to 512)
        size = sample['labeled']['inputs'].shape[1:]
        assert 256 <= min(size) and max(size) <= 512
        assert 'gt_sem_seg' in sample['labeled']['data_samples']
        val_set = DATASETS.build(cfg.val_dataloader.dataset)
        assert len(val_set) == 16

        # no download in the test: the backbone starts from random weights
        cfg.model.segmentor.backbone.init_cfg = None
        convert_sync_bn(cfg.model)
        model = MODELS.build(cfg.model)
    assert model.student.decode_head.num_classes == len(CLASSES)
    assert model.contrastive_loss.num_classes == len(CLASSES)
    model.eval()
    with torch.no_grad():
        logits = model.student(torch.zeros(1, 3, 64, 64), mode='tensor')
    assert logits.shape[1] == len(CLASSES)
