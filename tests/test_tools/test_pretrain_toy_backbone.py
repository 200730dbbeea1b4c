# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""tools/analysis/pretrain_toy_backbone.py at a tiny setting, and the
ToyShapes21 configs loading its checkpoint through ``init_cfg``."""
import glob
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from toy_fixtures import REPO_ROOT

from mmseg_u2pl.utils.launch import convert_sync_bn

SCRIPT = osp.join(REPO_ROOT, 'tools', 'analysis', 'pretrain_toy_backbone.py')
_spec = importlib.util.spec_from_file_location('pretrain_toy_backbone', SCRIPT)
pretrain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pretrain)

TINY = [
    '--iters', '2', '--batch-size', '4', '--num-images', '8', '--num-val', '4',
    '--img-size', '32', '--threads', '1'
]
TOY21_CONFIGS = sorted(
    glob.glob(osp.join(REPO_ROOT, 'configs', '*', '*_toy21-*.py')))


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('pretrained') / 'tiny.pth')
    meta = pretrain.main(TINY + ['--out', path])
    assert not meta['reused']
    return path


def test_checkpoint_form(tiny_checkpoint):
    checkpoint = torch.load(tiny_checkpoint, map_location='cpu')
    state = checkpoint['state_dict']
    # the backbone's own keys, as mmseg's ImageNet checkpoints
    assert 'stem.0.weight' in state and 'layer4.1.bn2.running_var' in state
    assert not any(k.startswith(('backbone.', 'fc.')) for k in state)
    assert state['stem.0.weight'].shape == (16, 3, 3, 3)  # stem 32 / 2
    meta = checkpoint['meta']
    assert meta['arguments']['iters'] == 2
    assert set(meta['val_accuracy']) == {'outline', 'hue', 'tone', 'texture'}
    assert all(0 <= v <= 100 for v in meta['val_accuracy'].values())
    assert len(meta['source_attributes']['outline']) == 8
    assert len(meta['source_attributes']['hue']) == 12


def test_reused_unless_forced(tiny_checkpoint, capsys):
    before = torch.load(tiny_checkpoint)['state_dict']['stem.0.weight']
    assert pretrain.main(TINY + ['--out', tiny_checkpoint])['reused']
    assert 'reusing' in capsys.readouterr().out
    after = torch.load(tiny_checkpoint)['state_dict']['stem.0.weight']
    assert torch.equal(before, after)


def test_default_output_is_cached_outside_the_repository(monkeypatch):
    monkeypatch.setenv('MMSEG_U2PL_CACHE', '/some/cache')
    assert pretrain.default_output() == osp.join('/some/cache', 'pretrained',
                                                 pretrain.CHECKPOINT_NAME)
    monkeypatch.delenv('MMSEG_U2PL_CACHE')
    path = pretrain.default_output()
    assert path.startswith(osp.expanduser('~'))
    assert not path.startswith(REPO_ROOT)


def test_toy21_configs_name_the_default_checkpoint():
    assert len(TOY21_CONFIGS) >= 7
    for path in TOY21_CONFIGS:
        cfg = Config.fromfile(path)
        model = cfg.model.get('segmentor', cfg.model)
        init_cfg = model.backbone.init_cfg
        assert init_cfg.type == 'Pretrained'
        assert init_cfg.checkpoint == osp.join('~', '.cache', 'mmseg_u2pl',
                                               'pretrained',
                                               pretrain.CHECKPOINT_NAME)
        assert model.decode_head.num_classes == 21


@pytest.mark.parametrize(
    'config', [p for p in TOY21_CONFIGS if 'supervised' in p][:1] +
    [p for p in TOY21_CONFIGS if osp.basename(p).startswith('u2pl_')][:1],
    ids=osp.basename)
def test_config_loads_the_checkpoint(config, tiny_checkpoint):
    init_default_scope('mmseg')
    cfg = Config.fromfile(config)
    semi = 'segmentor' in cfg.model
    model_cfg = cfg.model.segmentor if semi else cfg.model
    model_cfg.backbone.init_cfg.checkpoint = tiny_checkpoint
    convert_sync_bn(cfg.model)
    model = MODELS.build(cfg.model)
    model.init_weights()
    expected = torch.load(tiny_checkpoint)['state_dict']
    backbones = [model.student.backbone, model.teacher.backbone] \
        if semi else [model.backbone]
    for backbone in backbones:
        loaded = backbone.state_dict()
        assert set(loaded) == set(expected)
        for key, value in expected.items():
            assert torch.equal(loaded[key], value), key
