# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""mmpretrain backbones as U2PL students: ConvNeXt and DINOv2 ViT.

Covers ``configs/backbones/*convnext*`` and ``configs/dinov2``:

* the DINOv2 recipe configs change only the student, its crop and its
  optimiser against the paper's ResNet-101 configs of the same split, and
  the numbers they take from UniMatch V2 are checked value by value;
* each mmpretrain student, shrunk (few blocks, few channels, 56-pixel
  crops) but otherwise as configured, trains for 2 epochs in mmengine's
  Runner on the fake VOC / Cityscapes trees (supervised warm-up where the
  config has one, then U2PL with the representation head, the contrastive
  loss and its memory bank), is validated as teacher and student, and the
  optimiser gives the encoder and the heads the configured learning rates.

mmpretrain's models import torchvision; the environment of
``tools/setup_env.sh`` has a matching pair (torch 2.14.1, torchvision
0.29.1), so these tests fail rather than skip when the import breaks.
"""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from test_paper_configs import (BACKBONES, CONFIG_DIR, cityscapes_config, load,
                                make_fake_tree, mmpretrain_unavailable,
                                set_data_root, shrink_for_runner, voc_config)
from toy_fixtures import one_thread  # noqa: F401  (pytest fixture)

DINOV2_DIR = osp.join(CONFIG_DIR, 'dinov2')
VOC_CLASSIC = (92, 183, 366, 732, 1464)
CITYSCAPES = (186, 372, 744, 1488)
PATCH = 14


def dinov2_config(dataset: str, n: int) -> str:
    if dataset == 'voc':
        name = (f'u2pl_upernet_dinov2-b_4xb4+4-80e_voc-classic-{n}'
                '-518x518.py')
    else:
        name = (f'u2pl_upernet_dinov2-b_8xb2+2-200e_cityscapes-{n}'
                '-798x798.py')
    return osp.join(DINOV2_DIR, name)


DINOV2_CONFIGS = [dinov2_config('voc', n) for n in VOC_CLASSIC
                  ] + [dinov2_config('cityscapes', n) for n in CITYSCAPES]


def test_every_dinov2_config_exists():
    assert sorted(glob.glob(osp.join(DINOV2_DIR, '*.py'))) == \
        sorted(DINOV2_CONFIGS)


def _crops(cfg: Config):
    dataset = cfg.train_dataloader.dataset
    for side in (dataset.labeled, dataset.unlabeled):
        for transform in side.pipeline:
            if transform.type == 'RandomCrop':
                yield tuple(transform.crop_size)


@pytest.mark.parametrize(
    'path', DINOV2_CONFIGS, ids=[osp.basename(p) for p in DINOV2_CONFIGS])
def test_dinov2_recipe_changes_only_the_student_and_its_optimiser(path):
    voc = '_voc-' in path
    n = int(osp.basename(path).split('-')[-2])
    paper = load(voc_config(n) if voc else cityscapes_config(n))
    cfg = load(path, import_custom_modules=False)
    # U2PL itself, the data, the schedule and the hooks are the paper's
    for key in ('representation_head', 'contrastive_loss', 'semi_train_cfg',
                'semi_test_cfg'):
        assert cfg.model[key] == paper.model[key], key
    for key in ('train_cfg', 'param_scheduler', 'custom_hooks', 'val_cfg',
                'default_hooks', 'val_dataloader'):
        assert cfg[key] == paper[key], key
    for side in ('labeled', 'unlabeled'):
        ours = cfg.train_dataloader.dataset[side]
        theirs = paper.train_dataloader.dataset[side]
        assert ours.ann_file == theirs.ann_file
        assert ours.data_prefix == theirs.data_prefix
        # the same augmentation, at the ViT's crop
        assert [t.type for t in ours.pipeline] == \
            [t.type for t in theirs.pipeline]
    assert cfg.train_dataloader.batch_size == \
        paper.train_dataloader.batch_size
    # crops that are multiples of the patch: UniMatch V2's 518 and 798
    crop = (518, 518) if voc else (798, 798)
    student = cfg.model.segmentor
    assert set(_crops(cfg)) == {crop}
    assert tuple(student.data_preprocessor.size) == crop
    assert tuple(cfg.data_preprocessor.size) == crop
    assert crop[0] % PATCH == 0
    if voc:
        assert student.test_cfg.mode == 'whole'
    else:
        assert student.test_cfg.mode == 'slide'
        assert tuple(student.test_cfg.crop_size) == crop
        assert all(s % PATCH == 0 for s in student.test_cfg.stride)
        assert student.decode_head.sampler == \
            paper.model.segmentor.decode_head.sampler  # OHEM
    # DINOv2-B in mmpretrain's VisionTransformer, OpenMMLab's weights
    backbone = student.backbone
    assert backbone.type == 'mmpretrain.VisionTransformer'
    assert (backbone.arch, backbone.patch_size,
            backbone.layer_scale_init_value) == ('base', PATCH, 1e-5)
    assert backbone.init_cfg.checkpoint.endswith(
        'vit-base-p14_dinov2-pre_3rdparty_20230426-ba246503.pth')
    assert backbone.init_cfg.prefix == 'backbone.'
    assert 'mmpretrain.models' in cfg.custom_imports.imports
    assert student.decode_head.num_classes == (21 if voc else 19)
    # UniMatch V2's optimiser: AdamW, wd 0.01, encoder 5e-6, heads x40
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.weight_decay,
            tuple(optimizer.betas)) == ('AdamW', 0.01, (0.9, 0.999))
    lr_mult = cfg.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult
    assert optimizer.lr * lr_mult == pytest.approx(5e-6)
    assert optimizer.lr == pytest.approx(2e-4)


# ---------------------------------------------------------------------------
# real training runs of shrunk students
# ---------------------------------------------------------------------------
VIT_SIZE = 4 * PATCH  # 56-pixel crops: 4 x 4 patches


def tiny_dinov2(student: Config) -> None:
    """4 blocks of 48 channels, every block an output."""
    student.backbone.update(
        arch=dict(
            embed_dims=48, num_layers=4, num_heads=3,
            feedforward_channels=96),
        img_size=VIT_SIZE,
        out_indices=(0, 1, 2, 3),
        init_cfg=None)
    student.neck.update(in_channels=[48] * 4, out_channels=48)
    student.decode_head.update(in_channels=[48] * 4, channels=16)


def tiny_convnext(student: Config) -> None:
    """One block per stage, 8 to 64 channels."""
    student.backbone.update(
        arch=dict(depths=[1, 1, 1, 1], channels=[8, 16, 32, 64]),
        drop_path_rate=0.,
        init_cfg=None)
    student.decode_head.update(
        in_channels=64,
        c1_in_channels=8,
        channels=16,
        c1_channels=16,
        classifier_channels=16)


STUDENTS = dict(
    convnext=(BACKBONES['convnext'], tiny_convnext, 64, 1e-4, 1e-3),
    dinov2_voc=(dinov2_config('voc', 92), tiny_dinov2, VIT_SIZE, 5e-6, 2e-4),
    dinov2_cityscapes=(dinov2_config('cityscapes', 186), tiny_dinov2,
                       VIT_SIZE, 5e-6, 2e-4))


def _lr(optimizer, param: torch.nn.Parameter) -> float:
    [lr] = [
        group['lr'] for group in optimizer.param_groups
        if any(p is param for p in group['params'])
    ]
    return lr


@pytest.mark.parametrize('name', list(STUDENTS))
@pytest.mark.usefixtures('one_thread')
def test_mmpretrain_student_trains_in_the_runner(tmp_path, name):
    reason = mmpretrain_unavailable()
    assert not reason, (
        f'{reason}. Run `bash tools/setup_env.sh`: it installs the torch and '
        'torchvision pair of requirements.txt.')
    from mmengine.runner import Runner
    path, shrink, size, encoder_lr, head_lr = STUDENTS[name]
    root = make_fake_tree(str(tmp_path / 'data'))
    cfg = set_data_root(load(path), root)
    shrink(cfg.model.segmentor)
    cfg = shrink_for_runner(cfg, str(tmp_path / 'work'), size=size)
    runner = Runner.from_cfg(cfg)
    model = runner.model
    assert type(model.student.backbone).__module__.startswith('mmpretrain.')
    # the encoder and the heads at the configured learning rates
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    assert _lr(optimizer, next(model.student.backbone.parameters())) == \
        pytest.approx(encoder_lr)
    for head in (model.student.decode_head, model.student.representation_head):
        assert _lr(optimizer, next(head.parameters())) == \
            pytest.approx(head_lr)
    encoder_before = [
        p.detach().clone() for p in model.student.backbone.parameters()
    ]
    runner.train()
    # 3 (VOC) or 2 (Cityscapes) unlabeled images in batches of 2: one
    # iteration per epoch, the second one semi-supervised
    assert runner.iter == 2
    scalars = runner.message_hub.log_scalars
    assert 'train/unsup.loss_ce' in scalars
    assert 'train/contrast.loss_contrast' in scalars
    assert 'val/teacher/mIoU' in scalars and 'val/student/mIoU' in scalars
    assert any(not torch.equal(before, after) for before, after in zip(
        encoder_before, model.student.backbone.parameters()))
    assert glob.glob(str(tmp_path / 'work' / 'best_teacher_mIoU_epoch_*.pth'))
