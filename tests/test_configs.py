# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Every config builds and runs one real training step on tiny inputs."""
import glob
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_u2pl  # noqa: F401
from mmseg_u2pl.utils.fake_data import fake_packed_batch
from mmseg_u2pl.utils.launch import convert_sync_bn
from toy_fixtures import set_semi

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# The paper's configs (ResNet-101 networks, 30+ configs) are covered, one
# build per architecture, by tests/test_paper_configs.py, and the DINOv2
# recipe (ViT-B) by tests/test_mmpretrain_backbones.py.
PAPER_CONFIG_DIRS = ('voc', 'cityscapes', 'gta2cityscapes', 'backbones',
                     'dinov2')
CONFIGS = sorted(
    p for p in glob.glob(
        osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p and osp.relpath(p, osp.join(ROOT, 'configs')).split(
        os.sep)[0] not in PAPER_CONFIG_DIRS)
SIZE = 64


def build(config: str):
    init_default_scope('mmseg')
    cfg = Config.fromfile(config)
    # pretrained backbones (ToyShapes21) are loaded by
    # tests/test_tools/test_pretrain_toy_backbone.py; here the step must
    # not depend on a cached checkpoint
    cfg.model.get('segmentor', cfg.model).backbone.pop('init_cfg', None)
    convert_sync_bn(cfg.model)
    model_cfg = cfg.model
    if cfg.get('data_preprocessor') is not None and 'segmentor' not in \
            model_cfg:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    return cfg, MODELS.build(model_cfg)


def test_configs_found():
    names = [osp.basename(p) for p in CONFIGS]
    assert any(n.startswith('u2pl_') for n in names)
    assert any(n.startswith('u2pl-nocontrast_') for n in names)
    assert any(n.startswith('deeplabv3plus_') for n in names)


@pytest.mark.parametrize(
    'config', CONFIGS, ids=[osp.relpath(p, ROOT) for p in CONFIGS])
def test_config_builds_and_trains_one_step(config):
    torch.manual_seed(0)
    cfg, model = build(config)
    model.init_weights()
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 10)
    hub.update_info('max_iters', 100)
    semi = hasattr(model, 'teacher')
    if semi:
        num_classes = model.student.decode_head.num_classes
        data = dict(
            labeled=fake_packed_batch(2, SIZE, num_classes),
            unlabeled=fake_packed_batch(
                2, SIZE, num_classes, with_label=False))
        set_semi(True)
        # CutMix on, so that every part of the step runs
        model.semi_train_cfg['cutmix']['prob'] = 1.0
    else:
        data = fake_packed_batch(2, SIZE, model.decode_head.num_classes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    log_vars = model.train_step(data, optim_wrapper)
    assert torch.isfinite(log_vars['loss'])
    changed = [
        k for k, v in model.state_dict().items()
        if v.dtype.is_floating_point and not torch.equal(v, before[k])
    ]
    if semi:
        assert 'unsup.loss_ce' in log_vars
        assert any(k.startswith('sup.') for k in log_vars)
        assert any(k.startswith('student.backbone') for k in changed)
        # the optimizer never touches the teacher's parameters
        teacher_params = {
            f'teacher.{n}'
            for n, _ in model.teacher.named_parameters()
        }
        assert not teacher_params & set(changed)
        if getattr(model, 'contrastive_loss', None) is not None:
            assert 'contrast.loss_contrast' in log_vars
            assert any(
                k.startswith('student.representation_head') for k in changed)
    else:
        assert any(k.startswith('backbone') for k in changed)
