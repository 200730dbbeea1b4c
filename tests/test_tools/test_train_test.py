# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""tools/train.py, tools/test.py and tools/dist_train.sh, run for real on a
tiny dataset on CPU, plus unit tests of the launch helpers they call."""
import importlib.util
import json
import os
import os.path as osp
import re
import socket
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config, ConfigDict
from PIL import Image
from toy_fixtures import build_model, tiny_segmentor_cfg

from mmseg_u2pl.engine.optimizers import CPUAmpOptimWrapper
from mmseg_u2pl.utils.checkpoint import (load_checkpoint_safely,
                                         register_checkpoint_safe_globals)
from mmseg_u2pl.utils.checkpoint_fit import CheckpointMismatchError
from mmseg_u2pl.utils.dist_utils import dist_env_from_launcher
from mmseg_u2pl.utils.launch import (convert_sync_bn, cpu_model_wrapper_cfg,
                                     enable_amp, prepare_launch)

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PYTHON = sys.executable
TOOLS = osp.join(REPO_ROOT, 'tools')
NO_CUDA = not torch.cuda.is_available()

CONFIG = '''
default_scope = 'mmseg'
data_root = {data_root!r}
metainfo = dict(
    classes=('background', 'thing', 'stuff'),
    palette=[[0, 0, 0], [128, 0, 0], [0, 128, 0]])
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(32, 32)),
    backbone=dict(
        type='ResNetV1c',
        depth=18,
        base_channels=8,
        stem_channels=8,
        out_indices=(3, ),
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='FCNHead',
        in_channels=64,
        in_index=0,
        channels=16,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=3,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.png',
    seg_map_suffix='.png',
    data_prefix=dict(img_path='images', seg_map_path='labels'))
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(dataset, ann_file='splits/train.txt',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, ann_file='splits/val.txt', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=8,
         by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=4)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
'''


def _write_dataset(root: str) -> None:
    """12 train + 4 val RGB 32x32 PNGs, labels in {0, 1, 2}."""
    rng = np.random.default_rng(0)
    for sub in ('images', 'labels', 'splits'):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    names = [f'img_{i:02d}' for i in range(16)]
    for name in names:
        label = np.zeros((32, 32), dtype=np.uint8)
        label[:, 16:] = 1
        label[16:, :8] = 2
        image = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
        image[label == 1] += 120  # classes are easy to tell apart
        image[label == 2, 2] += 190
        Image.fromarray(image).save(osp.join(root, 'images', name + '.png'))
        Image.fromarray(label).save(osp.join(root, 'labels', name + '.png'))
    with open(osp.join(root, 'splits', 'train.txt'), 'w') as f:
        f.write('\n'.join(names[:12]) + '\n')
    with open(osp.join(root, 'splits', 'val.txt'), 'w') as f:
        f.write('\n'.join(names[12:]) + '\n')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _run(args, timeout=300, **env) -> subprocess.CompletedProcess:
    """Run a command with one thread per process; fail with its output."""
    full_env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    full_env.pop('PYTHONPATH', None)  # the tools must find the repo alone
    full_env.update(env)
    proc = subprocess.run(
        args,
        cwd=REPO_ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout)
    return proc


def _check(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc.stdout


def _scalars(work_dir: str) -> list:
    """All lines of the ``vis_data/scalars.json`` files of a work dir."""
    lines = []
    for run in sorted(os.listdir(work_dir)):
        path = osp.join(work_dir, run, 'vis_data', 'scalars.json')
        if osp.isfile(path):
            with open(path) as f:
                lines += [json.loads(line) for line in f]
    return lines


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """A tiny dataset and config, and one training run of 4 iterations."""
    root = tmp_path_factory.mktemp('tools')
    data_root = str(root / 'data')
    _write_dataset(data_root)
    config = str(root / 'tiny_fcn.py')
    with open(config, 'w') as f:
        f.write(CONFIG.format(data_root=data_root))
    work_dir = str(root / 'work_dir')
    out = _check(
        _run([
            PYTHON,
            osp.join(TOOLS, 'train.py'), config, '--work-dir', work_dir
        ]))
    return dict(root=root, config=config, work_dir=work_dir, train_log=out)


def test_train_trains_validates_and_saves(setup):
    out, work_dir = setup['train_log'], setup['work_dir']
    assert 'Iter(train) [4/4]' in out
    assert re.search(r'Iter\(val\) \[4/4\].*mIoU: \d', out)
    if NO_CUDA:
        assert 'was replaced by BN' in out
    for name in ('iter_2.pth', 'iter_4.pth', 'last_checkpoint'):
        assert osp.isfile(osp.join(work_dir, name)), name
    val = [line for line in _scalars(work_dir) if 'mIoU' in line]
    assert len(val) == 1 and val[0]['step'] == 4
    assert 0 <= val[0]['mIoU'] <= 100
    ckpt = load_checkpoint_safely(osp.join(work_dir, 'iter_4.pth'))
    assert ckpt['meta']['iter'] == 4
    assert ckpt['meta']['dataset_meta']['classes'] == ('background', 'thing',
                                                       'stuff')


def test_resume_continues_to_a_longer_schedule(setup):
    work_dir = setup['work_dir']
    out = _check(
        _run([
            PYTHON,
            osp.join(TOOLS, 'train.py'), setup['config'], '--work-dir',
            work_dir, '--resume', '--cfg-options', 'train_cfg.max_iters=6',
            'train_cfg.val_interval=6'
        ]))
    assert 'Auto resumed from the latest checkpoint' in out
    assert 'iter_4.pth' in out
    assert 'resumed epoch: 0, iter: 4' in out
    assert 'Iter(train) [5/6]' in out and 'Iter(train) [6/6]' in out
    assert 'Iter(train) [1/6]' not in out
    assert osp.isfile(osp.join(work_dir, 'iter_6.pth'))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip().endswith('iter_6.pth')
    steps = [line['step'] for line in _scalars(work_dir) if 'mIoU' in line]
    assert steps == [4, 6]


def test_test_tool_prints_miou(setup):
    work_dir = str(setup['root'] / 'test_dir')
    checkpoint = osp.join(setup['work_dir'], 'iter_4.pth')
    out = _check(
        _run([
            PYTHON,
            osp.join(TOOLS, 'test.py'), setup['config'], checkpoint,
            '--work-dir', work_dir
        ]))
    assert f'Load checkpoint from {checkpoint}' in out
    match = re.search(r'Iter\(test\) \[4/4\].*mIoU: ([\d.]+)', out)
    assert match, out[-3000:]
    runs = [d for d in os.listdir(work_dir) if d[:8].isdigit()]
    with open(osp.join(work_dir, runs[0], runs[0] + '.json')) as f:
        metrics = json.load(f)
    assert metrics['mIoU'] == pytest.approx(float(match.group(1)), abs=0.01)


def test_test_tool_refuses_an_unsafe_checkpoint(setup):
    path = str(setup['root'] / 'unsafe.pth')
    register_checkpoint_safe_globals()
    ckpt = load_checkpoint_safely(osp.join(setup['work_dir'], 'iter_2.pth'))
    ckpt['meta']['extra'] = {1: __import__('collections').deque([1])}
    torch.save(ckpt, path)
    proc = _run([
        PYTHON,
        osp.join(TOOLS, 'test.py'), setup['config'], path, '--work-dir',
        str(setup['root'] / 'unsafe_dir')
    ])
    assert proc.returncode != 0
    assert 'UnsafeCheckpointError' in proc.stdout
    assert f'Refusing to load checkpoint {path!r}' in proc.stdout
    assert 'collections.deque' in proc.stdout


def test_test_tool_refuses_a_checkpoint_of_another_model(setup):
    """A 4-class checkpoint for the 3-class config: refused before testing
    (mmengine would only warn and test a random classifier)."""
    path = str(setup['root'] / 'four_classes.pth')
    ckpt = load_checkpoint_safely(osp.join(setup['work_dir'], 'iter_2.pth'))
    ckpt['state_dict']['decode_head.conv_seg.weight'] = torch.zeros(
        4, 16, 1, 1)
    ckpt['state_dict']['decode_head.conv_seg.bias'] = torch.zeros(4)
    torch.save(ckpt, path)
    proc = _run([
        PYTHON,
        osp.join(TOOLS, 'test.py'), setup['config'], path, '--work-dir',
        str(setup['root'] / 'mismatch_dir')
    ])
    assert proc.returncode != 0
    assert ('mmseg_u2pl.utils.checkpoint_fit.CheckpointMismatchError: '
            f'Checkpoint {path!r} does not fit the model (EncoderDecoder)'
            ) in proc.stdout
    assert ('2 weight(s) have another shape: decode_head.conv_seg.weight '
            '(4, 16, 1, 1) in the file, (3, 16, 1, 1) in the model; '
            'decode_head.conv_seg.bias (4,) in the file, (3,) in the '
            'model') in proc.stdout
    assert 'Iter(test)' not in proc.stdout


def _tool(name: str):
    """Import tools/<name>.py as a module (its main() does not run)."""
    spec = importlib.util.spec_from_file_location(f'{name}_tool',
                                                  osp.join(TOOLS, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tools_check_classes_and_checkpoint_with_opt_in(tmp_path):
    path = str(tmp_path / 'four_classes.pth')
    torch.save(
        dict(state_dict=build_model(tiny_segmentor_cfg(4)).state_dict()), path)
    model = build_model(tiny_segmentor_cfg(3))
    loader = SimpleNamespace(
        dataset=SimpleNamespace(metainfo=dict(classes=('a', 'b', 'c'))))
    runner = SimpleNamespace(
        model=model, train_dataloader=loader, test_dataloader=loader)
    opt_in = Config(dict(allow_checkpoint_mismatch=True))
    for check in (_tool('train.py').check_before_training,
                  _tool('test.py').check_before_testing):
        with pytest.raises(
                CheckpointMismatchError,
                match=r'decode_head\.conv_seg\.weight \(4, 16, 1, 1\) in '
                r'the file, \(3, 16, 1, 1\) in the model'):
            check(runner, Config(), path)
        check(runner, opt_in, path)  # loads the matching weights only
    train_check = _tool('train.py').check_before_training
    train_check(runner, Config(), None)  # nothing to load
    loader.dataset.metainfo['classes'] = ('a', 'b')
    with pytest.raises(
            ValueError,
            match=r'^model\.decode_head\.num_classes = 3, but the dataset '
            r"\(train_dataloader\.dataset\) has 2 classes: \('a', 'b'\)"):
        train_check(runner, opt_in, None)


def test_dist_train_runs_two_processes(setup):
    """Two CPU processes (gloo), also where CUDA exists (hidden here)."""
    work_dir = str(setup['root'] / 'dist_dir')
    out = _check(
        _run([
            'bash',
            osp.join(TOOLS, 'dist_train.sh'), setup['config'], '2',
            '--work-dir', work_dir, '--cfg-options', 'train_cfg.max_iters=2',
            'train_cfg.val_interval=2'
        ],
             PYTHON=PYTHON,
             PORT=str(_free_port()),
             CUDA_VISIBLE_DEVICES=''))
    assert 'running 2 CPU processes with the gloo backend' in out
    assert 'was replaced by BN' in out
    assert re.search(r'Iter\(train\) \[2/2\]', out)
    assert re.search(r'Iter\(val\) \[2/2\].*mIoU', out)  # 4 images / 2
    ckpt = load_checkpoint_safely(osp.join(work_dir, 'iter_2.pth'))
    assert ckpt['meta']['iter'] == 2
    assert not any(k.startswith('module.') for k in ckpt['state_dict'])


def test_amp_trains_on_cpu(setup):
    work_dir = str(setup['root'] / 'amp_dir')
    out = _check(
        _run([
            PYTHON,
            osp.join(TOOLS, 'train.py'), setup['config'], '--work-dir',
            work_dir, '--amp', '--cfg-options', 'train_cfg.max_iters=2',
            'train_cfg.val_interval=2'
        ]))
    assert 'Iter(train) [2/2]' in out
    ckpt = load_checkpoint_safely(osp.join(work_dir, 'iter_2.pth'))
    assert 'loss_scaler' in ckpt['optimizer']  # an AMP optimizer wrapper
    if NO_CUDA:
        assert 'bfloat16 autocast on CPU' in out


# ----------------------------------------------------------------------------
# Launch helpers (in process, fast)


def test_convert_sync_bn_walks_nested_configs():
    cfg = dict(
        type='EncoderDecoder',
        backbone=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
        heads=[
            dict(norm_cfg=dict(type='mmseg.SyncBN')),
            dict(norm_cfg=dict(type='BN')),
            dict(inner=(dict(norm_cfg=dict(type='MMSyncBN')), ))
        ],
        other=dict(type=torch.nn.SyncBatchNorm))
    assert convert_sync_bn(cfg) == 4
    assert cfg['backbone']['norm_cfg'] == dict(type='BN', requires_grad=True)
    assert [h.get('norm_cfg', {}).get('type')
            for h in cfg['heads']] == ['BN', 'BN', None]
    assert cfg['heads'][2]['inner'][0]['norm_cfg']['type'] == 'BN'
    assert cfg['other']['type'] == 'BN'
    assert cfg['type'] == 'EncoderDecoder'
    assert convert_sync_bn(cfg) == 0


def _optim_cfg(type_='OptimWrapper') -> Config:
    return Config(
        dict(
            optim_wrapper=dict(type=type_, optimizer=dict(type='SGD', lr=1.))))


def test_enable_amp_sets_the_wrapper():
    cfg = _optim_cfg()
    enable_amp(cfg, 'cfg.py')
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    prepare_launch(cfg, 'none')
    if NO_CUDA:
        assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper'
        assert cfg.optim_wrapper.dtype == 'bfloat16'
    else:
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'


@pytest.mark.parametrize('type_', ['AmpOptimWrapper', 'CPUAmpOptimWrapper'])
def test_enable_amp_refuses_an_amp_config(type_):
    with pytest.raises(
            ValueError, match=f'my_cfg.py already uses mixed.*'
            f'{type_}'):
        enable_amp(_optim_cfg(type_), 'my_cfg.py')


def test_enable_amp_refuses_other_wrappers():
    with pytest.raises(
            ValueError,
            match="my_cfg.py has optim_wrapper.type="
            "'OptimWrapperDict'"):
        enable_amp(_optim_cfg('OptimWrapperDict'), 'my_cfg.py')
    with pytest.raises(ValueError, match='no `optim_wrapper`'):
        enable_amp(Config(dict()), 'my_cfg.py')


def test_cpu_amp_optim_wrapper_steps_in_bfloat16():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    wrapper = CPUAmpOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.5))
    weight = model.weight.detach().clone()
    x = torch.randn(3, 4)
    with wrapper.optim_context(model):
        out = model(x)
    assert out.dtype == torch.bfloat16
    loss = out.float().sum()
    wrapper.update_params(loss)
    # d(sum(Wx+b))/dW = sum_n x_n for every output row; scaling is undone.
    expected = weight - 0.5 * x.sum(0).expand(2, 4)
    torch.testing.assert_close(
        model.weight.detach(), expected, atol=0.05, rtol=0.02)
    assert 'loss_scaler' in wrapper.state_dict()
    with pytest.raises(ValueError, match="got 'int4'"):
        CPUAmpOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=1.), dtype='int4')


def test_cpu_model_wrapper_cfg_drops_device_ids():
    cfg = Config(dict(find_unused_parameters=True))
    assert cpu_model_wrapper_cfg(cfg) == ConfigDict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=True,
        device_ids=None)
    cfg = Config(
        dict(
            model_wrapper_cfg=dict(
                type='MMDistributedDataParallel',
                device_ids=[0],
                broadcast_buffers=True)))
    assert cpu_model_wrapper_cfg(cfg) == ConfigDict(
        type='MMDistributedDataParallel',
        broadcast_buffers=True,
        device_ids=None)
    with pytest.raises(KeyError, match='NoSuchWrapper'):
        cpu_model_wrapper_cfg(
            Config(dict(model_wrapper_cfg=dict(type='NoSuchWrapper'))))


def test_mean_teacher_models_get_the_wrapper_that_runs_their_step():
    from mmseg_u2pl.utils.launch import default_model_wrapper_cfg
    cfg = Config(dict(model=dict(type='U2PL')))
    assert default_model_wrapper_cfg(cfg) == ConfigDict(
        type='MeanTeacherDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=False)
    assert cpu_model_wrapper_cfg(cfg).type == \
        'MeanTeacherDistributedDataParallel'
    plain = Config(dict(model=dict(type='EncoderDecoder')))
    assert default_model_wrapper_cfg(plain).type == \
        'MMDistributedDataParallel'


def test_dist_env_from_launcher(monkeypatch):
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                'MASTER_PORT'):
        # setenv first so that monkeypatch restores what the code sets.
        monkeypatch.setenv(key, '')
        monkeypatch.delenv(key)
    with pytest.raises(KeyError, match=r"--launcher pytorch.*'RANK'"):
        dist_env_from_launcher('pytorch')
    monkeypatch.setenv('SLURM_PROCID', '5')
    monkeypatch.setenv('SLURM_NTASKS', '8')
    monkeypatch.setenv('SLURM_LOCALID', '1')
    monkeypatch.setenv('SLURM_NODELIST', 'node[1-2]')
    monkeypatch.setenv('MASTER_ADDR', '10.0.0.1')
    assert dist_env_from_launcher('slurm') == (5, 8, 1)
    assert os.environ['RANK'] == '5' and os.environ['WORLD_SIZE'] == '8'
    assert os.environ['MASTER_PORT'] == '29500'
    with pytest.raises(ValueError, match="'gpus'"):
        dist_env_from_launcher('gpus')


@pytest.mark.skipif(not NO_CUDA, reason='CPU-only behaviour')
def test_prepare_launch_without_cuda_single_process():
    cfg = Config(
        dict(
            model=dict(norm_cfg=dict(type='SyncBN')),
            sync_bn='torch',
            optim_wrapper=dict(
                type='AmpOptimWrapper', optimizer=dict(type='SGD', lr=1.))))
    prepare_launch(cfg, 'none')
    assert cfg.launcher == 'none'
    assert cfg.model.norm_cfg.type == 'BN'
    assert cfg.sync_bn is None
    assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == 'bfloat16'
    assert 'model_wrapper_cfg' not in cfg  # single process: no DDP
    with pytest.raises(ValueError, match="'gpus'"):
        prepare_launch(cfg, 'gpus')
