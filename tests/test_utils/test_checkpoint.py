# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Safe checkpoint loading: real MMEngine checkpoints load with
``weights_only=True`` after registration, anything else is refused."""
import collections
import pickle

import numpy as np
import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from mmseg_u2pl.utils.checkpoint import (UnsafeCheckpointError,
                                         checkpoint_safe_globals,
                                         load_checkpoint_safely,
                                         refuse_unsafe_checkpoints,
                                         register_checkpoint_safe_globals)


class _ToyModel(BaseModel):

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)
        self.bn = torch.nn.BatchNorm1d(1)

    def forward(self, x, y, mode='tensor'):
        out = self.bn(self.linear(torch.stack(x)))
        if mode == 'loss':
            return dict(loss=((out - torch.stack(y))**2).mean())
        return [dict(pred=p) for p in out]


class _ToyDataset(Dataset):
    metainfo = dict(classes=('a', 'b'), palette=[[1, 2, 3], [4, 5, 6]])

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i):
        return dict(x=torch.tensor([i, 1.]), y=torch.tensor([i / 8.]))


class _ToyMetric(BaseMetric):
    """Returns numpy values like mmseg's IoUMetric (np.float64 etc.)."""

    def process(self, data_batch, data_samples):
        self.results.extend(1 for _ in data_samples)

    def compute_metrics(self, results):
        return dict(
            mIoU=np.float64(12.5),
            f32=np.float32(0.5),
            count=np.int64(len(results)),
            per_class=np.array([1.5, 2.5]))


def _toy_runner(work_dir, max_iters, resume=False) -> Runner:
    loader = dict(
        dataset=_ToyDataset(),
        batch_size=2,
        num_workers=0,
        collate_fn=dict(type='pseudo_collate'))
    torch.manual_seed(0)  # same initial weights in every run
    return Runner(
        model=_ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            loader, sampler=dict(type='InfiniteSampler', shuffle=False)),
        val_dataloader=dict(
            loader, sampler=dict(type='DefaultSampler', shuffle=False)),
        val_evaluator=dict(type=_ToyMetric),
        val_cfg=dict(),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=2),
        optim_wrapper=dict(
            optimizer=dict(
                type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=2),
            dict(type='PolyLR', by_epoch=False, begin=2, end=6)
        ],
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        log_processor=dict(by_epoch=False),
        randomness=dict(seed=0),
        resume=resume,
        default_scope='mmengine')


@pytest.fixture(scope='module')
def real_checkpoint(tmp_path_factory):
    """A real MMEngine checkpoint after 4 iterations with validation."""
    torch.set_num_threads(1)
    work_dir = tmp_path_factory.mktemp('toy_run')
    runner = _toy_runner(work_dir, max_iters=4)
    runner.train()
    state = {k: v.clone() for k, v in runner.model.state_dict().items()}
    return work_dir, work_dir / 'iter_4.pth', state


def test_real_checkpoint_needs_the_allow_list(real_checkpoint):
    _, path, _ = real_checkpoint
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
            torch.load(path)
    finally:
        torch.serialization.add_safe_globals(saved)


def test_real_checkpoint_round_trips_with_default_torch_load(real_checkpoint):
    _, path, state = real_checkpoint
    register_checkpoint_safe_globals()
    ckpt = torch.load(path)  # default weights_only (True since torch 2.6)
    assert set(ckpt) == {
        'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers'
    }
    for key, value in state.items():
        torch.testing.assert_close(ckpt['state_dict'][key], value)
    # SGD momentum buffers are there for both parameters of the linear layer.
    assert len(ckpt['optimizer']['state']) == 4  # linear w/b + bn w/b
    assert len(ckpt['param_schedulers']) == 2
    hub = ckpt['message_hub']
    loss = hub['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer)
    assert len(loss.data[0]) == 4  # one loss per iteration
    assert loss.mean(1) == pytest.approx(float(loss.data[0][-1]))
    mIoU = hub['log_scalars']['val/mIoU']
    assert mIoU.current() == 12.5
    assert ckpt['meta']['iter'] == 4
    assert hub['runtime_info']['iter'] == 3  # 0-based, saved before +1
    np.testing.assert_array_equal(hub['runtime_info']['val/per_class'],
                                  [1.5, 2.5])
    assert ckpt['meta']['dataset_meta']['classes'] == ('a', 'b')


def test_mmengine_resume_works_with_weights_only(real_checkpoint, tmp_path):
    """4 iterations + resume to 6 == 6 iterations in one go."""
    work_dir, _, _ = real_checkpoint
    register_checkpoint_safe_globals()
    resumed = _toy_runner(work_dir, max_iters=6, resume=True)
    resumed.train()
    assert resumed.iter == 6
    # The message hub was restored: 4 saved losses + 2 new ones.
    assert resumed.message_hub.get_scalar('train/loss').data[0].size == 6
    straight = _toy_runner(tmp_path, max_iters=6)
    straight.train()
    np.testing.assert_allclose(
        resumed.message_hub.get_scalar('train/lr').data[0],
        straight.message_hub.get_scalar('train/lr').data[0])
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value)


def test_numpy_values_round_trip(tmp_path):
    path = tmp_path / 'numpy.pth'
    values = dict(
        f32=np.float32(1.5),
        f64=np.float64(-2.25),
        i64=np.int64(7),
        ints=np.arange(3, dtype=np.int32),
        mask=np.array([True, False]),
        half=np.array([0.5], dtype=np.float16))
    torch.save(values, path)
    loaded = load_checkpoint_safely(str(path))
    assert loaded['f32'] == np.float32(1.5)
    assert loaded['f32'].dtype == np.float32
    assert loaded['f64'] == -2.25 and loaded['i64'] == 7
    np.testing.assert_array_equal(loaded['ints'], [0, 1, 2])
    assert loaded['ints'].dtype == np.int32
    np.testing.assert_array_equal(loaded['mask'], [True, False])
    assert loaded['half'].dtype == np.float16


def test_register_is_idempotent():
    register_checkpoint_safe_globals()
    before = len(torch.serialization.get_safe_globals())
    registered = register_checkpoint_safe_globals()
    assert len(torch.serialization.get_safe_globals()) == before
    assert HistoryBuffer in registered and np.ndarray in registered
    names = {entry[1] for entry in registered if isinstance(entry, tuple)}
    assert {
        'numpy.core.multiarray._reconstruct',
        'numpy._core.multiarray._reconstruct', 'numpy._core.multiarray.scalar',
        'builtins.getattr'
    } <= names
    assert registered == checkpoint_safe_globals()


def test_unknown_global_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / 'deque.pth'
    torch.save({'state_dict': {}, 'extra': collections.deque([1])}, path)
    register_checkpoint_safe_globals()
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint_safely(str(path))
    message = str(info.value)
    assert str(path) in message
    assert 'collections.deque' in message
    assert 'add_safe_globals' in message and 'trust' in message
    # weights_only is still on for plain torch.load.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


class _GetattrPayload:
    """Pickles as ``getattr(numpy.ndarray, 'tofile')``: must be refused."""

    def __reduce__(self):
        return getattr, (np.ndarray, 'tofile')


def test_getattr_is_only_allowed_on_history_buffer(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save({'x': _GetattrPayload()}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint_safely(str(path))
    message = str(info.value)
    assert str(path) in message and 'builtins.getattr' in message
    assert 'tofile' in message and 'weights_only=False' in message


def test_guard_passes_other_errors_through(tmp_path):
    with pytest.raises(pickle.UnpicklingError, match='^truncated$'):
        with refuse_unsafe_checkpoints('x.pth'):
            raise pickle.UnpicklingError('truncated')
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_checkpoint_safely(str(tmp_path / 'missing.pth'))
