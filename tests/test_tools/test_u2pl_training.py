# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Real short U2PL trainings through ``tools/train.py`` on the toy data.

Every run is a subprocess on a generated 32 px toy dataset: 6 iterations
(a supervised warm-up of 2 or 1 iterations, then semi-supervised ones),
validation and checkpoints every 3 iterations. The module shares its runs
between tests:

* the config without the contrastive term and the full U2PL config;
* a ``--resume`` of the full run from its iteration-3 checkpoint, with a
  probe hook that saves the state right after resuming;
* the export of the full run's teacher to plain MMSegmentation.
"""
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint
from mmseg.apis import inference_model
from mmseg.registry import MODELS
from toy_fixtures import toy_data_root  # noqa: F401  (pytest fixture)
from toy_fixtures import (REPO_ROOT, U2PL_CONFIG, U2PL_NOCONTRAST_CONFIG,
                          as_cli_options, toy_split, toy_train_cfg_options,
                          write_hooked_u2pl_config)

from mmseg_u2pl.utils.checkpoint import load_checkpoint_safely

PYTHON = sys.executable
NOCONTRAST_WARMUP, FULL_WARMUP = 2, 1
TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
EXPORT = osp.join(REPO_ROOT, 'tools', 'model_converters',
                  'export_checkpoint.py')


def run(args, env_extra=None, check=True, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    env.update(env_extra or {})
    proc = subprocess.run(
        [PYTHON] + args,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f'{" ".join(args[:2])} failed ({proc.returncode}):\n'
            f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}')
    return proc


def train(config, work_dir, options, extra_args=(), **kwargs):
    return run([TRAIN, config, '--work-dir', work_dir] + list(extra_args) +
               ['--cfg-options'] + as_cli_options(options), **kwargs)


def scalars(work_dir):
    """Logged records (``vis_data/scalars.json``) of every run in a dir."""
    records = []
    for path in sorted(
            glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def train_records(work_dir):
    return {r['iter']: r for r in scalars(work_dir) if 'iter' in r}


def val_records(work_dir):
    return {r['step']: r for r in scalars(work_dir) if 'teacher/mIoU' in r}


def state_dict_of(path):
    return load_checkpoint_safely(path, map_location='cpu')['state_dict']


def full_options(data_root):
    # warm-up of 1: at iteration 3 the EMA teacher differs from the student
    options = toy_train_cfg_options(
        data_root, warmup_iters=FULL_WARMUP, with_contrast=True)
    # every reliable pixel may anchor: a non-zero loss from the first step
    options['model.contrastive_loss.delta_p'] = 0.0
    return options


@pytest.fixture(scope='module')
def nocontrast_run(toy_data_root, tmp_path_factory):  # noqa: F811
    work_dir = str(tmp_path_factory.mktemp('u2pl_nocontrast'))
    train(U2PL_NOCONTRAST_CONFIG, work_dir,
          toy_train_cfg_options(toy_data_root, warmup_iters=NOCONTRAST_WARMUP))
    return work_dir


@pytest.fixture(scope='module')
def full_run(toy_data_root, tmp_path_factory):  # noqa: F811
    work_dir = str(tmp_path_factory.mktemp('u2pl_full'))
    train(U2PL_CONFIG, work_dir, full_options(toy_data_root))
    return work_dir


PROBE_MODULE = '''
# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Saves the teacher and the memory bank when training starts."""
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


@HOOKS.register_module(force=True)
class ResumeProbeHook(Hook):
    priority = 'VERY_LOW'  # after MeanTeacherHook.before_train

    def __init__(self, out_file):
        self.out_file = out_file

    def before_train(self, runner):
        model = runner.model
        model = model.module if is_model_wrapper(model) else model
        state = {
            key: value.detach().cpu().clone()
            for key, value in model.state_dict().items()
            if key.startswith(('teacher.', 'contrastive_loss.'))
        }
        torch.save(dict(iter=runner.iter, state=state), self.out_file)
'''


@pytest.fixture(scope='module')
def resumed_run(full_run, toy_data_root, tmp_path_factory):  # noqa: F811
    """Resume a copy of the full run from its iteration-3 checkpoint."""
    work_dir = str(tmp_path_factory.mktemp('u2pl_resumed'))
    probe_dir = str(tmp_path_factory.mktemp('probe'))
    probe_file = osp.join(work_dir, 'probe.pth')
    config = write_hooked_u2pl_config(
        probe_dir, 'u2pl_resume_probe', PROBE_MODULE, [
            "dict(type='MeanTeacherHook', warmup_iters=200)",
            "dict(type='PseudoLabelVisualizationHook', interval=500)",
            f"dict(type='ResumeProbeHook', out_file={probe_file!r})"
        ])
    checkpoint = osp.join(work_dir, 'iter_3.pth')
    shutil.copy(osp.join(full_run, 'iter_3.pth'), checkpoint)
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(checkpoint)
    train(
        config,
        work_dir,
        full_options(toy_data_root), ['--resume'],
        env_extra=dict(PYTHONPATH=probe_dir))
    return work_dir, probe_file


# ---------------------------------------------------------------------------
# (a), (b): both configs train and log what they should
# ---------------------------------------------------------------------------
def check_trained(work_dir, with_contrast, warmup):
    for name in ('iter_3.pth', 'iter_6.pth'):
        assert osp.isfile(osp.join(work_dir, name)), name
    assert glob.glob(osp.join(work_dir, 'best_teacher_mIoU_iter_*.pth'))
    records = train_records(work_dir)
    assert sorted(records) == [1, 2, 3, 4, 5, 6]
    for cur_iter, record in records.items():
        assert np.isfinite(record['loss'])
        assert 'sup.decode.loss_ce' in record
        # the first `warmup` iterations are supervised only
        semi = cur_iter > warmup
        assert ('unsup.loss_ce' in record) == semi, cur_iter
        if semi:
            assert np.isfinite(record['unsup.loss_ce'])
            assert 0 < record['unsup.reliable_ratio'] <= 1
            assert 0 <= record['unsup.pseudo_acc'] <= 1
            assert record['unsup.alpha_t'] == pytest.approx(
                20 * (1 - (cur_iter - 1) / 6), rel=1e-5)
        assert ('contrast.loss_contrast' in record) == with_contrast
        if with_contrast and semi:
            assert 'contrast.bank_fill_mean' in record
    # the EMA decay after the semi-supervised iterations: 0, 1/2, 2/3, ...
    decays = [records[i]['ema_decay'] for i in range(warmup + 1, 7)]
    assert decays == pytest.approx([1 - 1 / n for n in range(1, 7 - warmup)])
    assert all('ema_decay' not in records[i] for i in range(1, warmup + 1))
    validations = val_records(work_dir)
    assert sorted(validations) == [3, 6]
    for record in validations.values():
        for key in ('teacher/mIoU', 'student/mIoU', 'teacher/aAcc',
                    'student/aAcc'):
            assert 0 <= record[key] <= 100, key
    return records


def test_nocontrast_config_trains_and_logs(nocontrast_run):
    check_trained(
        nocontrast_run, with_contrast=False, warmup=NOCONTRAST_WARMUP)
    state = state_dict_of(osp.join(nocontrast_run, 'iter_6.pth'))
    assert not any(k.startswith('contrastive_loss.') for k in state)
    assert any(k.startswith('teacher.') for k in state)


def test_full_config_trains_and_logs(full_run):
    records = check_trained(full_run, with_contrast=True, warmup=FULL_WARMUP)
    contrast = [records[i]['contrast.loss_contrast'] for i in range(2, 7)]
    assert all(np.isfinite(contrast)) and max(contrast) > 0
    state = state_dict_of(osp.join(full_run, 'iter_3.pth'))
    assert int(state['contrastive_loss.memory_bank.fill'].sum()) > 0
    assert any('representation_head' in k for k in state)


def test_channels_last_training(full_run, toy_data_root, tmp_path):  # noqa
    """``model.channels_last=True`` trains, with NHWC weights throughout.

    The checkpoint has the keys and shapes of a default-layout run and its
    convolution weights are saved in the NHWC layout they were trained in.
    (Random initialisation fills memory in order, so the same seed gives
    other initial weights than the default layout: losses are not compared
    here; ``test_u2pl.py`` compares them with equal weights.)
    """
    work_dir = str(tmp_path / 'channels_last')
    options = full_options(toy_data_root)
    options['model.channels_last'] = True
    train(U2PL_CONFIG, work_dir, options)
    check_trained(work_dir, with_contrast=True, warmup=FULL_WARMUP)
    state = state_dict_of(osp.join(work_dir, 'iter_6.pth'))
    plain = state_dict_of(osp.join(full_run, 'iter_6.pth'))
    assert {k: v.shape for k, v in state.items()} == \
        {k: v.shape for k, v in plain.items()}
    for key in ('student.backbone.stem.0.weight',
                'teacher.representation_head.conv_rep.weight'):
        assert state[key].is_contiguous(memory_format=torch.channels_last)
        assert plain[key].is_contiguous()


def test_alpha_decay_from_the_warmup_end(toy_data_root, tmp_path):  # noqa
    """``alpha_decay_start='warmup_end'``: alpha_t starts at alpha_0 when
    the semi-supervised iterations begin and falls to 0 over them."""
    work_dir = str(tmp_path / 'alpha_warmup_end')
    options = toy_train_cfg_options(
        toy_data_root, warmup_iters=NOCONTRAST_WARMUP)
    options['model.semi_train_cfg.alpha_decay_start'] = 'warmup_end'
    train(U2PL_NOCONTRAST_CONFIG, work_dir, options)
    records = train_records(work_dir)
    # logged iteration i is runner.iter i - 1; t_w = 2 of T = 6
    alphas = [records[i]['unsup.alpha_t'] for i in range(3, 7)]
    assert alphas == pytest.approx([20., 15., 10., 5.], rel=1e-5)
    assert all('unsup.alpha_t' not in records[i] for i in (1, 2))


def test_train_mode_teacher_for_contrastive_targets(full_run, toy_data_root,
                                                    tmp_path):  # noqa
    """``contrastive_teacher_mode='train'`` (two teacher passes) trains.

    The warm-up draws nothing from the teacher: its losses are those of the
    default run; the teacher's validation during the warm-up is the
    student's (the teacher follows the student until the EMA starts).
    """
    work_dir = str(tmp_path / 'train_mode_teacher')
    options = full_options(toy_data_root)
    options['model.semi_train_cfg.reuse_teacher_forward'] = False
    options['model.semi_train_cfg.contrastive_teacher_mode'] = 'train'
    options['custom_hooks.0.warmup_iters'] = 3
    train(U2PL_CONFIG, work_dir, options)
    records = check_trained(work_dir, with_contrast=True, warmup=3)
    contrast = [records[i]['contrast.loss_contrast'] for i in range(4, 7)]
    assert all(np.isfinite(contrast)) and max(contrast) > 0
    default = train_records(full_run)
    assert records[1]['sup.decode.loss_ce'] == \
        default[1]['sup.decode.loss_ce']
    warmup_val = val_records(work_dir)[3]
    assert warmup_val['teacher/mIoU'] == warmup_val['student/mIoU']


# ---------------------------------------------------------------------------
# (c): resume
# ---------------------------------------------------------------------------
def test_resume_restores_teacher_and_memory_bank(full_run, resumed_run):
    work_dir, probe_file = resumed_run
    probe = torch.load(probe_file, map_location='cpu', weights_only=True)
    assert probe['iter'] == 3
    original = state_dict_of(osp.join(full_run, 'iter_3.pth'))
    resumed = probe['state']
    teacher_keys = [k for k in original if k.startswith('teacher.')]
    bank_keys = [k for k in original if k.startswith('contrastive_loss.')]
    assert teacher_keys and bank_keys
    assert {
        'contrastive_loss.memory_bank.features',
        'contrastive_loss.memory_bank.fill', 'contrastive_loss.memory_bank.ptr'
    } <= set(bank_keys)
    assert set(resumed) == set(teacher_keys) | set(bank_keys)
    for key in teacher_keys + bank_keys:
        assert torch.equal(resumed[key], original[key]), key
    # the teacher is not a copy of the student (EMA decay 1/2 at iter 3)
    assert not torch.equal(original['teacher.decode_head.conv_seg.weight'],
                           original['student.decode_head.conv_seg.weight'])
    # training went on from iteration 4 to 6
    records = train_records(work_dir)
    assert sorted(records) == [4, 5, 6]
    assert all('unsup.loss_ce' in records[i] for i in (4, 5, 6))
    assert [records[i]['ema_decay']
            for i in (4, 5, 6)] == pytest.approx([2 / 3, 3 / 4, 4 / 5])
    final = load_checkpoint_safely(
        osp.join(work_dir, 'iter_6.pth'), map_location='cpu')
    assert final['meta']['iter'] == 6
    assert not torch.equal(
        final['state_dict']['teacher.decode_head.'
                            'conv_seg.weight'],
        original['teacher.decode_head.conv_seg.weight'])


# ---------------------------------------------------------------------------
# (d): export to plain mmseg
# ---------------------------------------------------------------------------
PLAIN_INFERENCE = '''
import sys
import numpy as np
from mmengine.config import Config
from mmseg.apis import inference_model, init_model
config, checkpoint, image, out = sys.argv[1:]
# the exported config imports mmseg_u2pl only for the toy dataset of its
# val/test dataloaders; the model and test pipeline are plain mmseg
model = init_model(
    Config.fromfile(config, import_custom_modules=False), checkpoint,
    device='cpu')
result = inference_model(model, image)
np.save(out + '_pred.npy', result.pred_sem_seg.data.numpy())
np.save(out + '_logits.npy', result.seg_logits.data.numpy())
assert type(model).__name__ == 'EncoderDecoder', type(model)
assert not [m for m in sys.modules if m.startswith('mmseg_u2pl')]
print('plain mmseg inference done')
'''


def teacher_prediction(work_dir, checkpoint, image):
    """Prediction of the U2PL model (teacher) of a training run."""
    configs = glob.glob(osp.join(work_dir, '*.py'))
    assert len(configs) == 1, configs
    cfg = Config.fromfile(configs[0])
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = revert_sync_batchnorm(MODELS.build(cfg.model))
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
        model.cfg = cfg
        model.eval()
        assert model.semi_test_cfg['predict_on'] == 'teacher'
        teacher = inference_model(model, image)
        model.semi_test_cfg['predict_on'] = 'student'
        student = inference_model(model, image)
    return teacher, student, configs[0]


def test_exported_teacher_predicts_like_the_teacher(full_run, tmp_path,
                                                    toy_data_root):  # noqa
    checkpoint = osp.join(full_run, 'iter_6.pth')
    image = osp.join(toy_data_root, 'images',
                     toy_split(toy_data_root, 'val')[0] + '.png')
    teacher, student, config = teacher_prediction(full_run, checkpoint, image)
    out_dir = str(tmp_path / 'exported')
    run([
        EXPORT, config, checkpoint, out_dir, '--which', 'teacher', '--name',
        'teacher'
    ])
    exported_cfg = osp.join(out_dir, 'teacher.py')
    exported_ckpt = osp.join(out_dir, 'teacher.pth')
    assert osp.isfile(exported_cfg) and osp.isfile(exported_ckpt)
    exported = Config.fromfile(exported_cfg, import_custom_modules=False)
    assert exported.model.type == 'EncoderDecoder'
    assert exported.get('custom_imports',
                        {}).get('imports',
                                []) in ([], ['mmseg_u2pl']
                                        )  # only for the toy dataset
    state = torch.load(exported_ckpt, map_location='cpu', weights_only=True)
    assert not any(
        k.startswith(('teacher.', 'student.',
                      'contrastive_loss.')) or 'representation_head' in k
        for k in state['state_dict'])

    script = tmp_path / 'plain_inference.py'
    script.write_text(PLAIN_INFERENCE)
    out = str(tmp_path / 'plain')
    proc = run([str(script), exported_cfg, exported_ckpt, image, out])
    assert 'plain mmseg inference done' in proc.stdout
    pred = np.load(out + '_pred.npy')
    logits = np.load(out + '_logits.npy')
    assert pred.shape == (1, 32, 32)
    assert np.array_equal(pred, teacher.pred_sem_seg.data.numpy())
    np.testing.assert_allclose(
        logits, teacher.seg_logits.data.numpy(), rtol=1e-4, atol=1e-5)
    # the export is the teacher, not the student
    assert not np.allclose(logits, student.seg_logits.data.numpy())

    # by default the network that validated better is exported: the one
    # the validation before this checkpoint recorded
    choice = torch.load(
        checkpoint, map_location='cpu',
        weights_only=False)['message_hub']['runtime_info'].get(
            'semi_better_network')
    assert choice is not None and choice['iter'] == 3
    better = choice['network']
    proc = run([EXPORT, config, checkpoint, out_dir, '--name', 'auto'])
    assert f'Exporting the {better}: it validated better at iteration 3' \
        in proc.stdout
    run([str(script), osp.join(out_dir, 'auto.py'),
         osp.join(out_dir, 'auto.pth'), image, out])
    expected = dict(teacher=teacher, student=student)[better]
    np.testing.assert_allclose(
        np.load(out + '_logits.npy'),
        expected.seg_logits.data.numpy(),
        rtol=1e-4,
        atol=1e-5)


# ---------------------------------------------------------------------------
# bad input at start time
# ---------------------------------------------------------------------------
def test_batch_size_larger_than_the_unlabeled_set_fails_at_start(
        toy_data_root, tmp_path):  # noqa: F811
    num_unlabeled = len(toy_split(toy_data_root, 'unlabeled_1-16'))
    options = toy_train_cfg_options(toy_data_root)
    options['train_dataloader.batch_size'] = num_unlabeled + 1
    work_dir = str(tmp_path / 'too_big')
    proc = train(U2PL_NOCONTRAST_CONFIG, work_dir, options, check=False)
    assert proc.returncode != 0
    message = proc.stderr
    assert f'train_dataloader.batch_size={num_unlabeled + 1}' in message
    assert f'only {num_unlabeled}' in message
    # it failed before the first iteration
    assert not train_records(work_dir)
    assert not glob.glob(osp.join(work_dir, 'iter_*.pth'))
