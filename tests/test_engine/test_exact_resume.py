# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Exact resume after SIGKILL, and atomic checkpoints.

* Real trainings through ``tools/train.py`` (one process) and
  ``tools/dist_train.sh`` (two CPU processes, gloo): the toy U2PL config
  with the contrastive loss, 8 iterations, a supervised warm-up of 2, a
  checkpoint and a validation every 4. One run is uninterrupted; another
  kills itself with SIGKILL after iteration 6 (a test-only hook) and is
  resumed with ``--resume`` from ``iter_4.pth``. The resumed iterations 5 to
  8 must log exactly (bitwise, tolerance 0 on CPU) the losses and
  diagnostics of the uninterrupted run, and both final checkpoints must
  hold the same model (student, teacher, memory bank, prototypes),
  optimizer, schedulers and random states.
* In process: an interrupted checkpoint write, the random state helpers,
  :class:`RandomStateHook` and :class:`ExactResumeRunner` pieces.
"""
import glob
import json
import os
import os.path as osp
import random
import signal
import socket
import subprocess
import sys
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from toy_fixtures import toy_data_root  # noqa: F401  (pytest fixture)
from toy_fixtures import (REPO_ROOT, U2PL_CONFIG, as_cli_options,
                          toy_train_cfg_options, write_hooked_u2pl_config)
from torch import nn

from mmseg_u2pl.engine.hooks.random_state_hook import (RandomStateHook,
                                                       get_random_state,
                                                       set_random_state)
from mmseg_u2pl.engine.runner import AtomicCheckpointHook, ExactResumeRunner
from mmseg_u2pl.engine.runner.atomic_checkpoint import write_text_atomically
from mmseg_u2pl.engine.runner.exact_resume_runner import (
    load_rank_norm_buffers, rank_norm_buffers)
from mmseg_u2pl.utils.checkpoint import load_checkpoint_safely

PYTHON = sys.executable
TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
DIST_TRAIN = osp.join(REPO_ROOT, 'tools', 'dist_train.sh')
MAX_ITERS, INTERVAL, KILL_AFTER, WARMUP = 8, 4, 6, 2
# logged values that are timings, not training state
TIMING_KEYS = ('time', 'data_time', 'memory', 'eta')

KILLER_MODULE = '''
# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Test-only hook: SIGKILL this process after a given iteration."""
import os
import signal

from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module(force=True)
class KillAfterIterHook(Hook):
    priority = 'LOWEST'  # after the checkpoint hook

    def __init__(self, kill_after):
        self.kill_after = kill_after

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 == self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
'''


# ---------------------------------------------------------------------------
# real trainings killed and resumed
# ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture(scope='module')
def setup(toy_data_root, tmp_path_factory):  # noqa: F811
    """Options, the killing config and the environment of the runs."""
    root = tmp_path_factory.mktemp('exact_resume')
    kill_config = write_hooked_u2pl_config(
        str(root), 'exact_resume_killer', KILLER_MODULE, [
            f"dict(type='MeanTeacherHook', warmup_iters={WARMUP})",
            "dict(type='PseudoLabelVisualizationHook', interval=500)",
            f"dict(type='KillAfterIterHook', kill_after={KILL_AFTER})"
        ])
    options = toy_train_cfg_options(
        toy_data_root,
        max_iters=MAX_ITERS,
        val_interval=INTERVAL,
        warmup_iters=WARMUP,
        with_contrast=True)
    options['model.contrastive_loss.delta_p'] = 0.0  # anchors from the start
    options['log_processor.window_size'] = 1  # log each iteration's values
    # a seed per rank: the ranks' random states differ, so that the test
    # sees each one kept (with one seed they draw the same main stream)
    options['randomness.diff_rank_seed'] = True
    env = dict(
        os.environ,
        OMP_NUM_THREADS='1',
        MKL_NUM_THREADS='1',
        PYTHONPATH=str(root),
        CUDA_VISIBLE_DEVICES='')
    return SimpleNamespace(
        root=root, kill_config=kill_config, options=options, env=env)


def _train(setup, config, work_dir, num_procs, extra=()):
    """Run tools/train.py (1 process) or tools/dist_train.sh (2)."""
    tail = [config] if num_procs == 1 else [config, str(num_procs)]
    tail += ['--work-dir', work_dir, *extra, '--cfg-options'] + as_cli_options(
        setup.options)
    if num_procs == 1:
        args = [PYTHON, TRAIN] + tail
        env = setup.env
    else:
        args = ['bash', DIST_TRAIN] + tail
        env = dict(setup.env, PYTHON=PYTHON, PORT=str(_free_port()))
    return subprocess.run(
        args,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300)


def _check(proc):
    assert proc.returncode == 0, proc.stdout[-5000:]
    return proc.stdout


def _train_records(work_dir, run_index=-1):
    """Per-iteration logs of one run (timestamp folder) of a work dir."""
    runs = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    with open(runs[run_index]) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return {r['iter']: r for r in records if 'iter' in r}


def _kill_and_resume(setup, name, num_procs):
    """An uninterrupted run, and a run killed after iteration 6, resumed.

    Returns:
        tuple: Work dirs of both, the killed process, the resume's output.
    """
    reference = str(setup.root / f'{name}_uninterrupted')
    _check(_train(setup, U2PL_CONFIG, reference, num_procs))
    resumed = str(setup.root / f'{name}_killed')
    killed = _train(setup, setup.kill_config, resumed, num_procs)
    # it died between checkpoints, leaving iteration 4 as the latest
    assert sorted(_train_records(resumed)) == list(range(1, 7))
    assert not osp.exists(osp.join(resumed, 'iter_8.pth'))
    with open(osp.join(resumed, 'last_checkpoint')) as f:
        assert f.read() == osp.join(resumed, 'iter_4.pth')
    out = _check(_train(setup, U2PL_CONFIG, resumed, num_procs, ['--resume']))
    return reference, resumed, killed, out


def _check_exact_resume(reference, resumed, out):
    assert 'Auto resumed from the latest checkpoint' in out
    assert 'resumed epoch: 0, iter: 4' in out
    # the semi-supervised losses and the memory bank were active before it
    ckpt = load_checkpoint_safely(osp.join(resumed, 'iter_4.pth'))
    assert int(
        ckpt['state_dict']['contrastive_loss.memory_bank.fill'].sum()) > 0
    expected = _train_records(reference)
    got = _train_records(resumed)
    assert sorted(got) == [5, 6, 7, 8]
    for cur_iter in (5, 6, 7, 8):
        ref = {
            k: v
            for k, v in expected[cur_iter].items() if k not in TIMING_KEYS
        }
        assert {'unsup.loss_ce', 'contrast.loss_contrast', 'lr',
                'ema_decay'} <= set(ref)
        # tolerance 0: bitwise the same numbers on CPU
        assert {k: got[cur_iter][k] for k in ref} == ref, cur_iter
    # the same final model, optimizer, schedulers and random states
    final_ref = load_checkpoint_safely(osp.join(reference, 'iter_8.pth'))
    final = load_checkpoint_safely(osp.join(resumed, 'iter_8.pth'))
    assert final_ref['state_dict'].keys() == final['state_dict'].keys()
    for key, value in final_ref['state_dict'].items():
        assert torch.equal(value, final['state_dict'][key]), key
    torch.testing.assert_close(
        final['optimizer'], final_ref['optimizer'], rtol=0, atol=0)
    assert final['param_schedulers'] == final_ref['param_schedulers']
    torch.testing.assert_close(
        final['meta']['random_states'],
        final_ref['meta']['random_states'],
        rtol=0,
        atol=0)
    return final


def test_sigkilled_run_resumes_exactly(setup):
    reference, resumed, killed, out = _kill_and_resume(setup, 'single', 1)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    final = _check_exact_resume(reference, resumed, out)
    assert len(final['meta']['random_states']) == 1
    assert 'rank_norm_buffers' not in final['meta']


def test_sigkilled_two_process_run_resumes_exactly(setup):
    reference, resumed, killed, out = _kill_and_resume(setup, 'dist', 2)
    assert killed.returncode != 0, killed.stdout[-3000:]
    assert 'running 2 CPU processes with the gloo backend' in out
    final = _check_exact_resume(reference, resumed, out)
    # each rank's random state and BN statistics, which differ (BN, no
    # SyncBN, on CPU), are kept
    states = final['meta']['random_states']
    assert len(states) == 2
    assert not torch.equal(states[0]['torch'], states[1]['torch'])
    buffers = final['meta']['rank_norm_buffers']
    assert len(buffers) == 2
    name = 'teacher.backbone.stem.1.running_mean'
    assert torch.equal(buffers[0][name], final['state_dict'][name])
    assert not torch.equal(buffers[1][name], buffers[0][name])


def test_every_config_uses_the_exact_resume_runner():
    """Set once in default_runtime.py; no config may override it (the
    own-dataset template, one file without bases, sets it itself)."""
    template = 'u2pl/u2pl_deeplabv3plus_r18-d8_1xb4+4-80e_custom-512x512.py'
    configs = glob.glob(
        osp.join(REPO_ROOT, 'configs', '**', '*.py'), recursive=True)
    assert len(configs) > 40
    setters = set()
    for path in configs:
        with open(path) as f:
            text = f.read()
        if 'runner_type' in text or 'random_state' in text:
            setters.add(osp.relpath(path, REPO_ROOT))
    assert setters == {
        'configs/_base_/default_runtime.py', f'configs/{template}'
    }
    for name in ('u2pl/u2pl_deeplabv3plus_r18-d8_1xb4+4-2k_toy-1-16-64x64.py',
                 'voc/u2pl_deeplabv3plus_r101-d8_4xb4+4-80e_voc-classic-'
                 '92-513x513.py', template):
        cfg = Config.fromfile(
            osp.join(REPO_ROOT, 'configs', name), import_custom_modules=False)
        assert cfg.runner_type == 'ExactResumeRunner', name
        assert cfg.default_hooks.checkpoint.type == 'CheckpointHook', name


# ---------------------------------------------------------------------------
# in process: a tiny model and runner
# ---------------------------------------------------------------------------
class TinyModel(BaseModel):
    """``y = BN(Wx + b)`` regressed on targets."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.bn = nn.BatchNorm1d(1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.bn(self.linear(inputs))
        if mode == 'loss':
            return dict(loss=(out - data_samples).pow(2).mean())
        return out


def _tiny_runner(runner_cls, work_dir, max_iters=2, **default_hooks):
    gen = torch.Generator().manual_seed(0)
    dataset = [
        dict(inputs=torch.randn(2, generator=gen), data_samples=torch.ones(1))
        for _ in range(8)
    ]
    hooks = dict(
        checkpoint=dict(
            type='CheckpointHook',
            by_epoch=False,
            interval=1,
            max_keep_ckpts=1),
        logger=None,
        timer=None)
    hooks.update(default_hooks)
    return runner_cls(
        model=TinyModel(),
        work_dir=work_dir,
        experiment_name=f'tiny_{uuid.uuid4().hex}',
        train_dataloader=dict(
            dataset=dataset,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=4,
            num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=hooks,
        randomness=dict(seed=0))


def _hook(runner, cls):
    found = [hook for hook in runner.hooks if isinstance(hook, cls)]
    assert len(found) == 1, [type(h).__name__ for h in runner.hooks]
    return found[0]


def _write_half_then_fail(self, obj, filepath):
    """``LocalBackend.put`` of a process dying in the middle of the write."""
    with open(filepath, 'wb') as f:
        f.write(obj[:len(obj) // 2])
    raise OSError(f'killed while writing {filepath}')


@pytest.mark.parametrize('runner_cls', [Runner, ExactResumeRunner])
def test_interrupted_save_keeps_the_latest_checkpoint(runner_cls, tmp_path,
                                                      monkeypatch):
    work_dir = str(tmp_path)
    runner = _tiny_runner(runner_cls, work_dir)
    runner.train()
    pointer = osp.join(work_dir, 'last_checkpoint')
    latest = osp.join(work_dir, 'iter_2.pth')
    assert open(pointer).read() == latest
    assert sorted(f for f in os.listdir(work_dir)
                  if f.endswith('.pth')) == ['iter_2.pth']
    checkpoint_hook = _hook(runner, CheckpointHook)

    monkeypatch.setattr(LocalBackend, 'put', _write_half_then_fail)
    with pytest.raises(OSError, match='killed while writing'):
        checkpoint_hook._save_checkpoint(runner)  # iteration 3
    monkeypatch.undo()

    files = sorted(os.listdir(work_dir))
    if runner_cls is Runner:
        # MMEngine alone: the kept checkpoint was deleted before the save
        # and a truncated iter_3.pth is left
        assert type(checkpoint_hook) is CheckpointHook
        assert 'iter_2.pth' not in files and 'iter_3.pth' in files
        with pytest.raises(Exception):
            load_checkpoint_safely(osp.join(work_dir, 'iter_3.pth'))
        return
    assert type(checkpoint_hook) is AtomicCheckpointHook
    assert [f for f in files if f.startswith('iter_')] == ['iter_2.pth']
    assert not [f for f in files if f.endswith('.tmp')]
    assert open(pointer).read() == latest
    assert load_checkpoint_safely(latest)['meta']['iter'] == 2
    # a later save goes through and deletes the outdated one afterwards
    checkpoint_hook._save_checkpoint(runner)
    assert open(pointer).read() == osp.join(work_dir, 'iter_3.pth')
    assert sorted(f for f in os.listdir(work_dir)
                  if f.endswith('.pth')) == ['iter_3.pth']
    assert runner.message_hub.get_info('keep_ckpt_ids') == [3]


def test_interrupted_pointer_write_keeps_the_old_pointer(
        tmp_path, monkeypatch):
    pointer = tmp_path / 'last_checkpoint'
    pointer.write_text('work_dir/iter_4.pth')

    def fail(fd):
        raise OSError('killed before the rename')

    monkeypatch.setattr(os, 'fsync', fail)
    with pytest.raises(OSError, match='before the rename'):
        write_text_atomically(str(pointer), 'work_dir/iter_8.pth')
    monkeypatch.undo()
    assert pointer.read_text() == 'work_dir/iter_4.pth'
    assert os.listdir(tmp_path) == ['last_checkpoint']
    write_text_atomically(str(pointer), 'work_dir/iter_8.pth')
    assert pointer.read_text() == 'work_dir/iter_8.pth'
    assert os.listdir(tmp_path) == ['last_checkpoint']


def test_exact_resume_runner_default_hooks(tmp_path):
    runner = _tiny_runner(ExactResumeRunner, str(tmp_path / 'a'))
    assert _hook(runner, CheckpointHook).max_keep_ckpts == 1
    assert type(_hook(runner, CheckpointHook)) is AtomicCheckpointHook
    _hook(runner, RandomStateHook)
    runner = _tiny_runner(
        ExactResumeRunner, str(tmp_path / 'b'), random_state=None)
    assert not any(isinstance(h, RandomStateHook) for h in runner.hooks)


def test_checkpoint_holds_random_state_loadable_safely(tmp_path):
    work_dir = str(tmp_path)
    runner = _tiny_runner(ExactResumeRunner, work_dir, max_iters=1)
    runner.train()
    expected = get_random_state()
    path = osp.join(work_dir, 'iter_1.pth')
    # plain tensors and numbers: no global outside torch's own allow-list
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    states = torch.load(path, weights_only=True)['meta']['random_states']
    assert len(states) == 1
    torch.testing.assert_close(states[0], expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------
# random state helpers and RandomStateHook
# ---------------------------------------------------------------------------
def _draw():
    """One number from each generator."""
    return (torch.rand(1).item(), np.random.rand(), random.random(),
            np.random.randn())


def test_random_state_round_trip(tmp_path):
    np.random.randn()  # leaves a cached Gaussian in numpy's state
    state = get_random_state()
    expected = [_draw() for _ in range(3)]
    path = str(tmp_path / 'state.pth')
    torch.save(state, path)
    set_random_state(torch.load(path, weights_only=True))
    assert [_draw() for _ in range(3)] == expected


def _runner_stub(cur_iter, iterator):
    loop = SimpleNamespace(dataloader_iterator=iterator)
    return SimpleNamespace(iter=cur_iter, train_loop=loop)


def test_hook_restores_after_the_replayed_batches():
    saved = get_random_state()
    expected = _draw()
    hook = RandomStateHook()
    batches = iter(range(10))
    runner = _runner_stub(3, batches)
    hook.after_load_checkpoint(runner,
                               dict(meta=dict(iter=3, random_states=[saved])))
    hook.before_train(runner)
    loop = runner.train_loop
    for batch in range(3):  # the replay: loading draws random numbers
        assert next(loop.dataloader_iterator) == batch
        _draw()
    assert next(loop.dataloader_iterator) == 3  # first new batch
    assert _draw() == expected
    assert loop.dataloader_iterator is batches


@pytest.mark.parametrize(
    'cur_iter,meta', [(0, dict(iter=3)), (3, dict(iter=3)), (3, dict(iter=5)),
                      (3, dict(iter=3, world=2))],
    ids=['load_from', 'no_states', 'other_iter', 'other_world_size'])
def test_hook_restores_nothing_it_should_not(cur_iter, meta):
    state = get_random_state()
    if meta.pop('world', 1) == 2:
        meta['random_states'] = [state, state]
    elif meta['iter'] == 5:
        meta['random_states'] = [state]
    hook = RandomStateHook()
    batches = iter(range(10))
    runner = _runner_stub(cur_iter, batches)
    hook.after_load_checkpoint(runner, dict(meta=meta))
    hook.before_train(runner)
    assert runner.train_loop.dataloader_iterator is batches


def test_validation_draws_nothing_from_the_training_streams():
    hook = RandomStateHook()
    state = get_random_state()
    expected = _draw()
    set_random_state(state)
    hook.before_val_epoch(None)
    for _ in range(5):
        _draw()  # e.g. iter(val_dataloader) draws a base seed
    hook.after_val_epoch(None, metrics=dict(mIoU=1.))
    assert _draw() == expected


def test_rank_norm_buffers_skip_sync_bn():
    model = nn.Sequential(
        nn.BatchNorm2d(2), nn.SyncBatchNorm(3), nn.Conv2d(2, 2, 1))
    model[0].running_mean.fill_(0.5)
    buffers = rank_norm_buffers(model)
    assert sorted(buffers) == [
        '0.num_batches_tracked', '0.running_mean', '0.running_var'
    ]
    other = nn.Sequential(
        nn.BatchNorm2d(2), nn.SyncBatchNorm(3), nn.Conv2d(2, 2, 1))
    load_rank_norm_buffers(other, buffers)
    assert other[0].running_mean.tolist() == [0.5, 0.5]
    with pytest.raises(KeyError, match=r"\['1.running_mean'\]"):
        load_rank_norm_buffers(
            nn.Sequential(nn.BatchNorm2d(2)),
            dict(buffers, **{'1.running_mean': 0}))
