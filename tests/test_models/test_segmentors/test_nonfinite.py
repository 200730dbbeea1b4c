# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Numerical safety: a NaN/Inf loss term is caught and its step undone.

Steps are run as mmengine's train loop runs them (``MeanTeacherHook``
around the model's ``train_step``) on the tiny U2PL model, with a NaN
injected into an input image or into one loss term. A skipped step must
leave the student (parameters and BN buffers), the optimizer state, the
teacher and the memory bank bytewise unchanged.
The module ends with a real ``tools/train.py`` run on the toy dataset that
meets a NaN batch and completes.
"""
import copy
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import uuid
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper
from torch import nn
from toy_fixtures import one_thread, toy_data_root  # noqa: F401  (fixtures)
from toy_fixtures import (REPO_ROOT, as_cli_options, build_model,
                          make_semi_batch, set_semi, set_train_progress,
                          tiny_segmentor_cfg, tiny_u2pl_cfg,
                          toy_train_cfg_options, write_hooked_u2pl_config)

from mmseg_u2pl.engine.hooks.mean_teacher_hook import MeanTeacherHook
from mmseg_u2pl.models.utils.nonfinite import (SKIPPED_STEP_LOSS,
                                               nonfinite_loss_terms)

NAN = float('nan')


class Preprocessed(nn.Module):
    """A data preprocessor for batches that are preprocessed already."""

    def forward(self, data, training=False):
        return data


class MiniLoop:
    """The parts of mmengine's iteration-based train loop used here."""

    def __init__(self, model, warmup_iters=0, max_iters=10):
        # the batches given to `step` are already preprocessed
        model.data_preprocessor = Preprocessed()
        self.model = model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        self.optim_wrapper = OptimWrapper(
            torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=0.01))
        self.runner = SimpleNamespace(
            iter=0,
            model=model,
            optim_wrapper=self.optim_wrapper,
            message_hub=MessageHub.get_instance(f'nonfinite_{uuid.uuid4()}'),
            train_dataloader=[None] * 4)
        self.max_iters = max_iters
        self.hook = MeanTeacherHook(warmup_iters=warmup_iters)
        self.hook.before_train(self.runner)

    def step(self, inputs, samples):
        runner = self.runner
        set_train_progress(runner.iter, self.max_iters)
        try:
            self.hook.before_train_iter(runner, batch_idx=runner.iter)
            log_vars = self.model.train_step(
                dict(inputs=inputs, data_samples=samples),
                self.optim_wrapper)
            self.hook.after_train_iter(runner, batch_idx=runner.iter)
        finally:
            runner.iter += 1
        return log_vars

    def snapshot(self):
        """Every tensor a step may change (memory bank included)."""
        return dict(
            model={
                k: v.detach().clone()
                for k, v in self.model.state_dict().items()
            },
            optimizer=copy.deepcopy(self.optim_wrapper.state_dict()))

    def assert_unchanged(self, before):
        now = self.snapshot()
        assert now['model'].keys() == before['model'].keys()
        for key, value in before['model'].items():
            assert torch.equal(now['model'][key], value), key
        state, saved = now['optimizer']['state'], before['optimizer']['state']
        assert state.keys() == saved.keys() and state
        for index in saved:
            assert torch.equal(state[index]['momentum_buffer'],
                               saved[index]['momentum_buffer']), index
        assert now['optimizer']['param_groups'] == before['optimizer'][
            'param_groups']


def with_nan_image(inputs, branch):
    """A copy of ``inputs`` whose first ``branch`` image has a NaN patch."""
    inputs = {k: v.clone() for k, v in inputs.items()}
    inputs[branch][0, :, 4:8, 4:8] = NAN
    return inputs


def nan_decode_loss(head):
    """Make ``head.loss_by_feat`` return a NaN ``loss_ce``."""
    original = head.loss_by_feat

    def loss_by_feat(*args, **kwargs):
        losses = original(*args, **kwargs)
        losses['loss_ce'] = losses['loss_ce'] * NAN
        return losses

    head.loss_by_feat = loss_by_feat


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------
def test_defaults_and_bad_values_are_named(one_thread):  # noqa: F811
    cfg = build_model(tiny_u2pl_cfg()).semi_train_cfg
    assert cfg['nonfinite_loss'] == 'skip'
    assert cfg['max_consecutive_nonfinite'] == 5
    assert cfg['alpha_0'] == 20.  # U2PL's own defaults are kept
    with pytest.raises(ValueError, match=r"nonfinite_loss.*'ignore'"):
        build_model(tiny_u2pl_cfg(nonfinite_loss='ignore'))
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match='max_consecutive_nonfinite'):
            build_model(tiny_u2pl_cfg(max_consecutive_nonfinite=bad))
    model = build_model(tiny_u2pl_cfg(max_consecutive_nonfinite=None))
    assert model.semi_train_cfg['max_consecutive_nonfinite'] is None


def test_nonfinite_loss_terms_checks_loss_keys_only():
    losses = {
        'a.loss': torch.tensor(1.),
        'b.loss': [torch.tensor(2.),
                   torch.tensor([0., float('inf')])],
        'c.loss_ce': torch.tensor(NAN),
        'c.acc': torch.tensor(NAN),  # logged only: not a loss term
    }
    assert nonfinite_loss_terms(losses) == ['b.loss', 'c.loss_ce']
    assert nonfinite_loss_terms({'acc': torch.tensor(NAN)}) == []


# ---------------------------------------------------------------------------
# 'skip': nothing changes, the next good step proceeds
# ---------------------------------------------------------------------------
def test_skipped_step_changes_nothing_and_training_goes_on(
        one_thread):  # noqa: F811
    model = build_model(
        tiny_u2pl_cfg(with_contrast=True, cutmix=dict(prob=0.)))
    loop = MiniLoop(model)
    inputs, samples = make_semi_batch()
    for _ in range(2):  # momentum, an EMA teacher and a filled bank
        loop.step(inputs, samples)
    bank = model.contrastive_loss.memory_bank
    assert int(bank.fill.sum()) > 0
    before = loop.snapshot()

    # a NaN patch in an unlabeled image: the student's BN spreads it to
    # every loss term; the teacher's features of the other images are finite
    log_vars = loop.step(with_nan_image(inputs, 'unlabeled'), samples)
    assert model.step_skipped
    assert set(log_vars) == {'loss', SKIPPED_STEP_LOSS, 'nonfinite_steps'}
    assert log_vars['loss'].item() == 0.
    assert log_vars['nonfinite_steps'].item() == 1.
    loop.assert_unchanged(before)
    assert bank._undo is None  # the revert record is dropped
    assert all(p.grad is None for p in model.student.parameters())
    # the teacher was updated after the two good steps only
    _, counts = loop.runner.message_hub.get_scalar('train/ema_decay').data
    assert counts.sum() == 2

    log_vars = loop.step(inputs, samples)
    assert not model.step_skipped
    assert torch.isfinite(log_vars['loss']) and log_vars['loss'] > 0
    assert log_vars['nonfinite_steps'].item() == 1.  # logged from now on
    after = loop.snapshot()['model']
    for key in ('student.decode_head.conv_seg.weight',
                'teacher.decode_head.conv_seg.weight',
                'contrastive_loss.memory_bank.ptr'):
        assert not torch.equal(after[key], before['model'][key]), key
    assert all(
        torch.isfinite(v).all() for v in after.values()
        if v.is_floating_point())


def test_raise_names_the_term_and_the_iteration(one_thread):  # noqa: F811
    model = build_model(
        tiny_u2pl_cfg(
            with_contrast=True, cutmix=dict(prob=0.), nonfinite_loss='raise'))
    loop = MiniLoop(model, max_iters=10)
    inputs, samples = make_semi_batch()
    for _ in range(3):
        loop.step(inputs, samples)
    before = loop.snapshot()
    nan_decode_loss(model.student.decode_head)
    with pytest.raises(FloatingPointError) as error:
        loop.step(inputs, samples)
    message = str(error.value)
    assert "['sup.decode.loss_ce'] at iteration 4/10" in message
    assert 'unsup.loss_ce' not in message
    assert 'nonfinite_loss="skip"' in message  # what to do
    loop.assert_unchanged(before)


def test_skip_needs_the_models_own_train_step(one_thread):  # noqa: F811
    """Only ``train_step`` can apply a skipped step without touching the
    student (a wrapper calling ``loss`` directly, e.g. mmengine's default
    DDP, would let the optimizer apply weight decay and momentum)."""
    model = build_model(tiny_u2pl_cfg(cutmix=dict(prob=0.))).train()
    set_semi(True)
    set_train_progress(3, 10)
    inputs, samples = make_semi_batch()
    nan_decode_loss(model.student.decode_head)
    with pytest.raises(FloatingPointError,
                       match='MeanTeacherDistributedDataParallel'):
        model.loss(inputs, samples)


def test_ddp_wrapper_runs_the_models_step(one_thread):  # noqa: F811
    """Through ``MeanTeacherDistributedDataParallel`` (one gloo process) a
    NaN step is skipped as without DDP, and a good step trains."""
    import socket

    import torch.distributed as torch_dist

    from mmseg_u2pl.engine import MeanTeacherDistributedDataParallel
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    torch_dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    try:
        model = build_model(
            tiny_u2pl_cfg(with_contrast=True, cutmix=dict(prob=0.)))
        loop = MiniLoop(model)
        loop.model = MeanTeacherDistributedDataParallel(module=model)
        loop.runner.model = loop.model
        inputs, samples = make_semi_batch()
        loop.step(inputs, samples)
        before = loop.snapshot()
        log_vars = loop.step(with_nan_image(inputs, 'unlabeled'), samples)
        assert SKIPPED_STEP_LOSS in log_vars and model.step_skipped
        loop.assert_unchanged(before)
        loop.step(inputs, samples)
        after = loop.snapshot()['model']
        key = 'module.student.decode_head.conv_seg.weight'
        assert not torch.equal(after[key], before['model'][key])
    finally:
        torch_dist.destroy_process_group()


# ---------------------------------------------------------------------------
# the supervised path and the limit of consecutive skipped steps
# ---------------------------------------------------------------------------
def test_warmup_step_is_undone_and_consecutive_skips_are_limited(
        one_thread):  # noqa: F811
    model = build_model(
        dict(
            type='MeanTeacherSegmentor',
            segmentor=tiny_segmentor_cfg(),
            semi_train_cfg=dict(max_consecutive_nonfinite=2)))
    loop = MiniLoop(model, warmup_iters=100)
    inputs, samples = make_semi_batch(num_labeled=2, num_unlabeled=1)
    bad = with_nan_image(inputs, 'labeled')
    loop.step(inputs, samples)
    before = loop.snapshot()
    counts = []
    for batch in (bad, bad, inputs, bad, bad):
        log_vars = loop.step(batch, samples)
        assert model.semi_active is False  # the supervised warm-up
        counts.append(log_vars['nonfinite_steps'].item())
        if batch is bad and counts == [1.]:
            # BN statistics of the NaN batch were thrown away
            loop.assert_unchanged(before)
    assert counts == [1., 2., 2., 3., 4.]
    with pytest.raises(FloatingPointError) as error:
        loop.step(bad, samples)
    message = str(error.value)
    assert "['sup.decode.loss_ce'] at iteration 7/10" in message
    assert '3 steps in a row' in message
    assert 'max_consecutive_nonfinite=2' in message
    assert all(
        torch.isfinite(v).all() for v in model.student.state_dict().values()
        if v.is_floating_point())


# ---------------------------------------------------------------------------
# distributed: every rank takes the same decision (one all-reduce)
# ---------------------------------------------------------------------------
def test_flags_of_all_ranks_are_reduced_in_one_call(monkeypatch):
    from mmseg_u2pl.models.utils import nonfinite
    calls = []

    def all_reduce(data, op):
        """Two ranks: the other one has a NaN in 'unsup.loss'."""
        calls.append(op)
        data += torch.tensor([0, 1, 0], dtype=data.dtype)

    monkeypatch.setattr(nonfinite.dist, 'all_reduce', all_reduce)
    losses = {
        'sup.loss': torch.tensor(1.),
        'unsup.loss': torch.tensor(2.),
        'contrast.loss': torch.tensor(NAN),
    }
    assert nonfinite_loss_terms(losses) == ['unsup.loss', 'contrast.loss']
    assert calls == ['sum']


# ---------------------------------------------------------------------------
# a real training run meets a NaN batch
# ---------------------------------------------------------------------------
INJECT_MODULE = '''
# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Test-only: a NaN unlabeled image at chosen iterations."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


@HOOKS.register_module(force=True)
class InjectNaNHook(Hook):
    priority = 'VERY_HIGH'

    def __init__(self, iters):
        self.iters = set(iters)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = runner.model
        model = model.module if is_model_wrapper(model) else model
        preprocessor = model.data_preprocessor
        preprocessor.__dict__.pop('forward', None)
        if runner.iter not in self.iters:
            return
        original = preprocessor.forward

        def forward(data, training=False):
            out = original(data, training)
            out['inputs']['unlabeled'][0] = float('nan')
            return out

        preprocessor.forward = forward
'''


def test_training_run_skips_a_nan_batch(toy_data_root, tmp_path):  # noqa
    work_dir = str(tmp_path / 'work')
    module_dir = tmp_path / 'modules'
    module_dir.mkdir()
    config = write_hooked_u2pl_config(
        str(module_dir), 'u2pl_inject_nan', INJECT_MODULE, [
            "dict(type='MeanTeacherHook', warmup_iters=200)",
            "dict(type='InjectNaNHook', iters=[2])"
        ])
    options = toy_train_cfg_options(
        toy_data_root,
        max_iters=4,
        val_interval=4,
        warmup_iters=1,
        with_contrast=True)
    env = dict(
        os.environ,
        OMP_NUM_THREADS='1',
        MKL_NUM_THREADS='1',
        PYTHONPATH=str(module_dir))
    proc = subprocess.run(
        [
            sys.executable,
            osp.join(REPO_ROOT, 'tools', 'train.py'),
            str(config), '--work-dir', work_dir, '--cfg-options'
        ] + as_cli_options(options),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    output = proc.stdout + proc.stderr
    assert 'Skipped a step with a non-finite loss (NaN/Inf) in' in output
    assert 'at iteration 3/4' in output
    records = {}
    for path in glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if 'iter' in record and 'loss' in record:
                    records[record['iter']] = record
    assert sorted(records) == [1, 2, 3, 4]
    assert all('nonfinite_steps' not in records[i] for i in (1, 2))
    assert records[3]['nonfinite_steps'] == 1
    assert records[4]['nonfinite_steps'] == 1
    assert 0 < records[4]['unsup.loss_ce'] < 100
    # no EMA update at iteration 3: its record repeats the decay of
    # iteration 2 (0, the copy); iteration 4 has d = 1 - 1 / 3
    assert [records[i]['ema_decay']
            for i in (2, 3, 4)] == pytest.approx([0., 0., 2 / 3])
    state = torch.load(
        osp.join(work_dir, 'iter_4.pth'),
        map_location='cpu',
        weights_only=False)['state_dict']
    for key, value in state.items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), key
    assert int(state['contrastive_loss.memory_bank.fill'].sum()) > 0
