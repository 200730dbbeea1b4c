# Copyright (c) mmseg_u2pl contributors. All rights reserved.
import copy
import importlib.util
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmseg.apis import inference_model, init_model
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO_ROOT, 'tools', 'model_converters', 'export_checkpoint.py')


def load_tool():
    spec = importlib.util.spec_from_file_location('export_checkpoint', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = load_tool()

SEMI_CONFIG = """
custom_imports = dict(imports=['mmseg_u2pl'], allow_failed_imports=False)
default_scope = 'mmseg'
norm_cfg = dict(type='BN', requires_grad=True)
segmentor = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255),
    backbone=dict(
        type='ResNetV1c',
        depth=18,
        stem_channels=8,
        base_channels=8,
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='FCNHead',
        in_channels=64,
        in_index=3,
        channels=8,
        num_convs=1,
        concat_input=False,
        num_classes=3,
        norm_cfg=norm_cfg,
        loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
model = dict(
    type='MeanTeacherSegmentor',
    segmentor=segmentor,
    data_preprocessor=dict(type='SemiSegDataPreProcessor'),
    semi_train_cfg=dict(warmup_iters=2),
    semi_test_cfg=dict(predict_on='teacher'))
semi_loss_cfg = dict(lambda_u=1.0)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(32, 32), keep_ratio=True),
    dict(type='PackSegInputs')
]
unlabeled_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ExportTestUnknownTransform')
]
train_dataloader = dict(
    batch_size=2,
    dataset=dict(type='ExportTestSemiWrapper', unlabeled=unlabeled_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    dataset=dict(
        type='PascalVOCDataset',
        data_root='data/voc',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegClass'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
train_cfg = dict(type='IterBasedTrainLoop', max_iters=10, val_interval=5)
val_cfg = dict(type='TeacherStudentValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0, end=10)]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=5,
                    save_best='teacher/mIoU'))
custom_hooks = [
    dict(type='MeanTeacherHook', warmup_iters=2),
    dict(type='EmptyCacheHook'),
]
"""

CLASSES = ('background', 'cat', 'dog')


@pytest.fixture(scope='module')
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('export_cfg') / 'u2pl_tiny.py'
    path.write_text(SEMI_CONFIG)
    return str(path)


def load_cfg(path):
    """The semi config, loaded without importing its ``custom_imports``."""
    return Config.fromfile(path, import_custom_modules=False)


def build_segmentor(config_file, seed):
    register_all_modules(init_default_scope=True)
    cfg = load_cfg(config_file)
    torch.manual_seed(seed)
    segmentor = MODELS.build(copy.deepcopy(cfg.segmentor))
    with torch.no_grad():  # non-trivial BN statistics
        for name, buf in segmentor.named_buffers():
            if 'running' in name:
                buf.uniform_(0.5, 1.5)
    return segmentor.eval()


@pytest.fixture(scope='module')
def semi_files(tmp_path_factory, config_file):
    """A mean-teacher config and checkpoint written like mmengine does."""
    root = tmp_path_factory.mktemp('export')
    student = build_segmentor(config_file, seed=0).state_dict()
    teacher = build_segmentor(config_file, seed=1).state_dict()
    state_dict = {f'student.{k}': v for k, v in student.items()}
    state_dict.update({f'teacher.{k}': v for k, v in teacher.items()})
    state_dict['contrastive_loss.memory_bank.features'] = torch.randn(3, 4)
    state_dict['student.representation_head.conv.weight'] = torch.randn(2)
    state_dict['teacher.representation_head.conv.weight'] = torch.randn(2)
    message_hub = MessageHub.get_instance('test_export_checkpoint')
    message_hub.update_scalar('train/loss', np.float64(0.5))
    checkpoint = dict(
        meta=dict(
            dataset_meta=dict(classes=CLASSES, palette=[[0, 0, 0]] * 3),
            seed=np.int64(7),
            iter=10,
            hook_msgs=dict(best_ckpt='somewhere.pth'),
            cfg=SEMI_CONFIG),
        state_dict=state_dict,
        message_hub=message_hub.state_dict())
    ckpt = root / 'iter_10.pth'
    torch.save(checkpoint, str(ckpt))
    return dict(
        root=root,
        config=config_file,
        ckpt=str(ckpt),
        student=student,
        teacher=teacher)


@pytest.mark.parametrize('which', ['teacher', 'student'])
def test_export_loads_in_plain_mmseg(semi_files, tmp_path, which):
    torch.set_num_threads(1)
    ckpt_path, cfg_path = tool.export_checkpoint(
        semi_files['config'], semi_files['ckpt'], str(tmp_path), which=which)
    assert ckpt_path == str(tmp_path / f'u2pl_tiny_{which}.pth')
    assert cfg_path == str(tmp_path / f'u2pl_tiny_{which}.py')

    exported = torch.load(ckpt_path, weights_only=True)
    expected = semi_files[which]
    assert set(exported) == {'meta', 'state_dict'}
    assert list(exported['state_dict']) == list(expected)
    assert exported['meta']['dataset_meta']['classes'] == CLASSES
    assert exported['meta']['seed'] == 7
    assert exported['meta']['exported_from']['network'] == which
    assert 'hook_msgs' not in exported['meta']
    assert 'MeanTeacherSegmentor' not in exported['meta']['cfg']

    model = init_model(cfg_path, ckpt_path, device='cpu')
    loaded = model.state_dict()
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    other = semi_files['student' if which == 'teacher' else 'teacher']
    assert not torch.equal(loaded['decode_head.conv_seg.weight'],
                           other['decode_head.conv_seg.weight'])
    assert model.dataset_meta['classes'] == CLASSES

    image = np.random.RandomState(0).randint(
        0, 255, (24, 20, 3), dtype=np.uint8)
    result = inference_model(model, image)
    assert result.pred_sem_seg.data.shape == (1, 24, 20)
    assert int(result.pred_sem_seg.data.max()) < len(CLASSES)


def test_exported_config_is_plain(config_file):
    cfg = tool.plain_config(load_cfg(config_file))
    source = load_cfg(config_file)
    assert cfg.model.to_dict() == source.segmentor.to_dict()
    assert cfg.default_scope == 'mmseg'
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper',
                'param_scheduler', 'semi_loss_cfg', 'unlabeled_pipeline',
                'custom_imports'):
        assert key not in cfg, key
    assert cfg.val_cfg == dict(type='ValLoop')
    assert cfg.test_cfg == dict(type='TestLoop')
    assert cfg.default_hooks.checkpoint.save_best == 'mIoU'
    assert [h['type'] for h in cfg.custom_hooks] == ['EmptyCacheHook']
    assert cfg.test_pipeline == source.test_pipeline
    assert cfg.test_dataloader == source.test_dataloader
    assert cfg.val_evaluator == source.val_evaluator


def test_our_model_type_keeps_custom_imports(config_file):
    # stands for one of our registered types, e.g. DeepLabV3PlusHead
    class OurHead:
        pass

    OurHead.__module__ = 'mmseg_u2pl.models.heads.fake'
    MODELS.register_module(
        name='ExportTestOurHead', module=OurHead, force=True)
    cfg = load_cfg(config_file)
    cfg.model.segmentor.decode_head.type = 'ExportTestOurHead'
    plain = tool.plain_config(cfg)
    assert plain.custom_imports.imports == ['mmseg_u2pl']
    # an unknown type (package not imported) also needs the import
    cfg.model.segmentor.decode_head.type = 'ExportTestNotRegisteredHead'
    assert tool.plain_config(cfg).custom_imports.imports == ['mmseg_u2pl']


def test_missing_data_preprocessor_uses_top_level_or_fails(config_file):
    cfg = load_cfg(config_file)
    preprocessor = cfg.model.segmentor.pop('data_preprocessor')
    with pytest.raises(tool.ExportError, match='data_preprocessor'):
        tool.plain_config(cfg)
    cfg.data_preprocessor = preprocessor
    assert tool.plain_config(cfg).model.data_preprocessor == preprocessor


def test_config_without_segmentor_fails(config_file):
    cfg = load_cfg(config_file)
    cfg.model = cfg.segmentor
    with pytest.raises(tool.ExportError, match='"segmentor"'):
        tool.plain_config(cfg, 'plain.py')


def test_checkpoint_without_networks_fails(tmp_path, semi_files):
    plain = {k: v for k, v in semi_files['student'].items()}
    ckpt = tmp_path / 'plain.pth'
    torch.save(dict(meta=dict(), state_dict=plain), str(ckpt))
    with pytest.raises(tool.ExportError, match='no "teacher." or "student."'):
        tool.export_checkpoint(semi_files['config'], str(ckpt),
                               str(tmp_path / 'out'))
    with pytest.raises(SystemExit, match='no "teacher." or "student."'):
        tool.main([semi_files['config'], str(ckpt), str(tmp_path / 'out')])


class _GetattrPayload:
    """Pickles as ``getattr(numpy.ndarray, 'tofile')``: must be refused."""

    def __reduce__(self):
        return getattr, (np.ndarray, 'tofile')


def test_unsafe_checkpoint_is_refused(tmp_path, semi_files):
    # The message hub's HistoryBuffer pickles its statistics as
    # getattr(HistoryBuffer, name) (see semi_files); any other getattr is
    # refused by the package's allow-list, with its message.
    ckpt = tmp_path / 'getattr.pth'
    torch.save(dict(state_dict={}, extra=_GetattrPayload()), str(ckpt))
    with pytest.raises(tool.ExportError) as info:
        tool.export_checkpoint(semi_files['config'], str(ckpt),
                               str(tmp_path / 'out'))
    message = str(info.value)
    assert 'builtins.getattr' in message and 'tofile' in message
    assert '--trust-checkpoint' in message
    assert not (tmp_path / 'out').exists()


def test_extract_network_drops_extra_keys():
    state_dict = {
        'student.backbone.w': torch.ones(1),
        'teacher.backbone.w': torch.zeros(1),
        'teacher.representation_head.conv.weight': torch.ones(1),
        'teacher.counter': 3,
        'contrastive_loss.memory_bank.features': torch.ones(2),
    }
    plain = tool.extract_network(state_dict, 'teacher')
    assert list(plain) == ['backbone.w']
    assert torch.equal(plain['backbone.w'], torch.zeros(1))
    with pytest.raises(tool.ExportError, match='--which teacher'):
        tool.extract_network({'teacher.a': torch.ones(1)}, 'student')
    # DDP-style "module." prefix
    wrapped = {f'module.{k}': v for k, v in state_dict.items()}
    plain = tool.extract_network(tool.get_state_dict(wrapped), 'student')
    assert torch.equal(plain['backbone.w'], torch.ones(1))


def test_runs_as_script(semi_files, tmp_path):
    out_dir = tmp_path / 'script'
    proc = subprocess.run([
        sys.executable, TOOL, semi_files['config'], semi_files['ckpt'],
        str(out_dir), '--which', 'student', '--name', 'tiny'
    ],
                          cwd=REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    state_dict = torch.load(
        str(out_dir / 'tiny.pth'), weights_only=True)['state_dict']
    for key, value in semi_files['student'].items():
        assert torch.equal(state_dict[key], value), key
    assert Config.fromfile(str(out_dir / 'tiny.py')).model.type == \
        'EncoderDecoder'


def test_auto_exports_the_network_that_validated_better(
        semi_files, tmp_path, capsys):
    """``--which auto`` reads the choice the validation loop saved."""
    checkpoint = torch.load(semi_files['ckpt'], weights_only=False)
    # no recorded choice: the teacher, and the printed reason says so
    ckpt_path, _ = tool.export_checkpoint(semi_files['config'],
                                          semi_files['ckpt'],
                                          str(tmp_path / 'none'))
    assert ckpt_path.endswith('u2pl_tiny_teacher.pth')
    assert 'records no validation' in capsys.readouterr().out
    checkpoint['message_hub']['runtime_info']['semi_better_network'] = dict(
        network='student', metric='mIoU', teacher=50., student=52.5, iter=10)
    chosen = tmp_path / 'chosen.pth'
    torch.save(checkpoint, str(chosen))
    ckpt_path, _ = tool.export_checkpoint(semi_files['config'], str(chosen),
                                          str(tmp_path / 'auto'))
    assert ckpt_path.endswith('u2pl_tiny_student.pth')
    assert 'Exporting the student: it validated better at iteration 10: ' \
        'mIoU teacher 50.00, student 52.50.' in capsys.readouterr().out
    state_dict = torch.load(ckpt_path, weights_only=True)['state_dict']
    for key, value in semi_files['student'].items():
        assert torch.equal(state_dict[key], value), key
