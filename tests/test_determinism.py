# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Determinism: same seed, same losses (CPU).

Two in-process trainings of the tiny full U2PL config (representation head,
contrastive loss and memory bank) with
``randomness=dict(seed=0, deterministic=True)``, 6 iterations of which the
last 4 are semi-supervised, log bytewise identical losses at every
iteration. A run with another seed differs from the first iteration on, so
the comparison can fail. (On GPUs see docs: some CUDA kernels are
nondeterministic unless ``deterministic=True``, which costs speed.)
"""
import os.path as osp
import random
from typing import Dict, List

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner
from toy_fixtures import one_thread, toy_data_root  # noqa: F401  (fixtures)
from toy_fixtures import (U2PL_CONFIG, U2PL_NOCONTRAST_CONFIG, toy_runner_cfg,
                          toy_train_cfg_options)

MAX_ITERS, WARMUP_ITERS = 6, 2
SEMI_LOSSES = ('unsup.loss_ce', 'contrast.loss_contrast')


class LossRecorder(Hook):
    """Keeps the exact bytes of every logged value of every iteration."""

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.iterations: List[Dict[str, bytes]] = []

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        self.iterations.append({
            key:
            torch.as_tensor(value).detach().cpu().numpy().tobytes()
            for key, value in outputs.items()
        })


@pytest.fixture
def restore_global_state():
    """Undo what ``deterministic=True`` and seeding change process-wide."""
    algorithms = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    yield
    torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
    (torch.backends.cudnn.deterministic,
     torch.backends.cudnn.benchmark) = cudnn
    random.setstate(rng[0])
    np.random.set_state(rng[1])
    torch.set_rng_state(rng[2])


def train(data_root: str,
          work_dir: str,
          seed: int,
          with_contrast: bool = True,
          contrast_weight: float = 0.1) -> List[Dict[str, bytes]]:
    """6 iterations (2 supervised, 4 semi-supervised), no validation."""
    options = toy_train_cfg_options(
        data_root,
        max_iters=MAX_ITERS,
        val_interval=MAX_ITERS + 1,
        warmup_iters=WARMUP_ITERS,
        with_contrast=with_contrast)
    options['train_cfg.val_begin'] = MAX_ITERS + 1  # not even at the end
    options['default_hooks.checkpoint.interval'] = MAX_ITERS + 1
    if with_contrast:
        # every reliable pixel may anchor: the contrastive loss is not 0
        options['model.contrastive_loss.delta_p'] = 0.0
        options['model.contrastive_loss.loss_weight'] = contrast_weight
    options['randomness'] = dict(seed=seed, deterministic=True)
    config = U2PL_CONFIG if with_contrast else U2PL_NOCONTRAST_CONFIG
    cfg = toy_runner_cfg(config, work_dir, options)
    cfg.experiment_name = osp.basename(work_dir)
    runner = Runner.from_cfg(cfg)
    recorder = LossRecorder()
    runner.register_hook(recorder)
    runner.train()
    assert torch.are_deterministic_algorithms_enabled()
    return recorder.iterations


def as_float(value: bytes) -> float:
    return float(np.frombuffer(value, dtype=np.float32)[0])


def test_same_seed_gives_identical_losses(
        toy_data_root,  # noqa: F811
        tmp_path,
        one_thread,  # noqa: F811
        restore_global_state):
    first = train(toy_data_root, str(tmp_path / 'seed0_a'), seed=0)
    second = train(toy_data_root, str(tmp_path / 'seed0_b'), seed=0)
    other = train(toy_data_root, str(tmp_path / 'seed1'), seed=1)

    assert len(first) == MAX_ITERS
    # the runs reach the semi-supervised losses, with non-zero values
    for losses in first[WARMUP_ITERS:]:
        for key in SEMI_LOSSES:
            assert key in losses and as_float(losses[key]) != 0.0, key
    # warm-up: supervised only (the contrastive term is a 0 for DDP)
    assert 'unsup.loss_ce' not in first[WARMUP_ITERS - 1]
    assert as_float(first[0]['contrast.loss_contrast']) == 0.0
    # bytewise identical, iteration by iteration, key by key
    assert first == second
    # a different seed: other weights and batches from the first iteration
    assert first[0]['loss'] != other[0]['loss']
    assert all(a['loss'] != b['loss'] for a, b in zip(first, other))


def test_contrastive_branch_leaves_the_main_random_stream_alone(
        toy_data_root,  # noqa: F811
        tmp_path,
        one_thread,  # noqa: F811
        restore_global_state):
    """With the same seed, adding the contrastive branch changes nothing else.

    The branch (representation head: construction, initialisation,
    dropout; the loss's sampling) draws aside from the main random stream,
    so with ``loss_weight=0`` full U2PL trains exactly like U2PL without the
    contrastive term: same warm-up, same CutMix boxes and dropout, same
    losses bit for bit. Drawn from the main stream, the head's
    initialisation alone would change every later draw.
    """
    plain = train(
        toy_data_root, str(tmp_path / 'nocontrast'), 0, with_contrast=False)
    muted = train(
        toy_data_root,
        str(tmp_path / 'contrast_weight0'),
        0,
        with_contrast=True,
        contrast_weight=0.0)
    assert len(plain) == len(muted) == MAX_ITERS
    for it, (a, b) in enumerate(zip(plain, muted)):
        shared = {key: value for key, value in b.items() if key in a}
        assert set(shared) == set(a), it
        assert shared == a, f'iteration {it + 1} differs'
    # the muted branch did run: it logged its diagnostics after the warm-up
    assert as_float(muted[-1]['contrast.num_anchors']) > 0
    assert 'unsup.pseudo_acc' in plain[-1]
