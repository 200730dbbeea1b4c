# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""The own-dataset template works after editing only its marked block.

The tiny toy dataset is laid out as a user's folder (training and validation
images in two folders, masks of the labeled images only, two split lists);
the template's edit block is pointed at it, the datasets and the model are
built from the edited file, and a shrunk copy trains in the runner.
"""
import glob
import os
import os.path as osp
import re
import shutil

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.registry import DATASETS, MODELS, RUNNERS
from test_paper_configs import shrink_for_runner
from toy_fixtures import one_thread  # noqa: F401  (pytest fixture)
from toy_fixtures import toy_data_root  # noqa: F401  (pytest fixture)
from toy_fixtures import REPO_ROOT, toy_split

import mmseg_u2pl  # noqa: F401
from mmseg_u2pl.datasets.toy_dataset import TOY_CLASSES as CLASSES
from mmseg_u2pl.datasets.toy_dataset import TOY_PALETTE as PALETTE
from mmseg_u2pl.utils.launch import convert_sync_bn

TEMPLATE = osp.join(REPO_ROOT, 'configs', 'u2pl',
                    'u2pl_deeplabv3plus_r18-d8_1xb4+4-80e_custom-512x512.py')
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
    # the paper's schedule in epochs of the unlabeled images
    assert cfg.train_cfg == dict(
        type='EpochBasedTrainLoop', max_epochs=80, val_interval=4)
    [poly] = cfg.param_scheduler
    assert poly.type == 'PolyLR' and poly.end == 80
    assert poly.by_epoch and poly.convert_to_iter_based
    [teacher] = [h for h in cfg.custom_hooks if h.type == 'MeanTeacherHook']
    assert teacher == dict(
        type='MeanTeacherHook', warmup_epochs=1, max_decay=0.99)
    checkpoint = cfg.default_hooks.checkpoint
    assert checkpoint.by_epoch and checkpoint.interval == 4
    assert checkpoint.save_best == 'better/mIoU'
    assert cfg.default_hooks.logger.log_metric_by_epoch
    assert cfg.log_processor.by_epoch
    assert cfg.train_dataloader.sampler == dict(
        type='DefaultSampler', shuffle=True)
    assert cfg.train_dataloader.drop_last


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


def shrink_for_cpu(cfg: Config, work_dir: str, size: int = 64) -> Config:
    """The short run of :func:`test_paper_configs.shrink_for_runner` with
    the template's ResNet-18 at 8 base channels and its validation resize
    at the crop size."""
    student = cfg.model.segmentor
    student.backbone.update(stem_channels=16, base_channels=8, init_cfg=None)
    student.decode_head.update(
        in_channels=64, c1_in_channels=8, channels=16, c1_channels=4)
    for key in ('val_dataloader', 'test_dataloader'):
        for transform in cfg[key].dataset.pipeline:
            if transform.type == 'Resize':
                transform.scale = (size, size)
    return shrink_for_runner(cfg, work_dir, size)


@pytest.mark.usefixtures('one_thread')
def test_edited_template_trains_by_epoch(edited_config, tmp_path):
    """Epochs of the unlabeled images, a 1-epoch warm-up, best checkpoint."""
    work_dir = str(tmp_path / 'work_custom')
    # no yapf formatting of the config text that the runner dumps and
    # stores in every checkpoint (most of the run's time otherwise);
    # Config.fromfile does not pass format_python_code on
    cfg = Config(
        Config.fromfile(edited_config).to_dict(), format_python_code=False)
    cfg = shrink_for_cpu(cfg, work_dir)
    runner = RUNNERS.build(cfg)  # as tools/train.py: cfg.runner_type
    assert type(runner).__name__ == 'ExactResumeRunner'
    runner.train()
    # an epoch is one pass over the 56 unlabeled images, 2 per iteration
    num_unlabeled = len(runner.train_dataloader.dataset.unlabeled)
    assert num_unlabeled == 56
    assert len(runner.train_dataloader) == num_unlabeled // 2 == 28
    assert (runner.epoch, runner.iter) == (2, 2 * 28)
    [hook] = [h for h in runner.hooks if type(h).__name__ == 'MeanTeacherHook']
    assert hook.t_w == 28  # one epoch
    scalars = runner.message_hub.log_scalars
    # the second epoch is semi-supervised
    assert 'train/unsup.loss_ce' in scalars
    assert 'val/better/mIoU' in scalars
    best = glob.glob(osp.join(work_dir, 'best_better_mIoU_epoch_*.pth'))
    assert len(best) == 1
