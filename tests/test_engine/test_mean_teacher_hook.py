# Copyright (c) mmseg_u2pl contributors. All rights reserved.
import uuid
from types import SimpleNamespace

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner import Runner
from torch import nn

from mmseg_u2pl.engine.hooks.mean_teacher_hook import MeanTeacherHook
from mmseg_u2pl.models.segmentors.mean_teacher import MeanTeacherSegmentor


class ReadsTheWarmupLikeTheSegmentor:
    """``semi_active`` as ``MeanTeacherSegmentor`` derives it (from the
    iteration and the warm-up length in the current ``MessageHub``)."""

    semi_active = MeanTeacherSegmentor.semi_active


class OneParam(nn.Module):
    """A network with a single scalar parameter ``w``."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([value]))


class ConvBN(nn.Module):
    """A tiny conv + BN network (float and integer buffers)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.bn = nn.BatchNorm2d(2)


class FakeMeanTeacher(ReadsTheWarmupLikeTheSegmentor, nn.Module):
    """Stand-in for ``MeanTeacherSegmentor``: student, teacher, flag."""

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        for param in self.teacher.parameters():
            param.requires_grad_(False)


@MODEL_WRAPPERS.register_module(force=True)
class MeanTeacherHookTestWrapper(nn.Module):
    """Minimal model wrapper (like DDP) recognised by ``is_model_wrapper``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


class FakeRunner(SimpleNamespace):
    """Records ``iter`` in its MessageHub, as mmengine's RuntimeInfoHook."""

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == 'iter':
            self.message_hub.update_info('iter', value)


def fake_runner(model, cur_iter=0, dataloader_len=4):
    runner = FakeRunner(
        model=model,
        message_hub=MessageHub.get_instance(f'test_mt_{uuid.uuid4().hex}'),
        train_dataloader=[None] * dataloader_len)
    runner.iter = cur_iter
    return runner


def set_value(module: OneParam, value: float) -> None:
    with torch.no_grad():
        module.w.fill_(value)


def run_iteration(hook, runner, student_after_step=None):
    """Hooks around one iteration; the 'optimizer' sets the student."""
    hook.before_train_iter(runner, batch_idx=runner.iter)
    if student_after_step is not None:
        set_value(runner.model.student, student_after_step)
    hook.after_train_iter(runner, batch_idx=runner.iter)


def test_decay_sequence_and_teacher_values():
    model = FakeMeanTeacher(OneParam(0.), OneParam(10.))
    runner = fake_runner(model)
    hook = MeanTeacherHook(warmup_iters=2, max_decay=0.75)
    hook.before_train(runner)
    assert model.teacher.w.item() == 10.  # no copy before the warm-up ends
    teacher_values, flags = [], []
    for cur_iter in range(7):
        runner.iter = cur_iter
        # the student after the optimizer step of iteration t is t + 1
        run_iteration(hook, runner, student_after_step=cur_iter + 1.)
        teacher_values.append(model.teacher.w.item())
        flags.append(model.semi_active)
    # warm-up: the teacher follows the student (1, 2); iter 2: copy (2),
    # then d=0 -> 3;
    # iter 3: d=1/2 -> (3+4)/2; iter 4: d=2/3 -> 2/3*3.5 + 1/3*5 = 4;
    # iter 5: d=3/4 -> 0.75*4 + 0.25*6 = 4.5; iter 6: capped d=0.75 ->
    # 0.75*4.5 + 0.25*7 = 5.125
    expected = [1., 2., 3., 3.5, 4., 4.5, 5.125]
    assert teacher_values == pytest.approx(expected, abs=1e-6)
    assert flags == [False, False, True, True, True, True, True]
    decays, counts = runner.message_hub.get_scalar('train/ema_decay').data
    assert decays.tolist() == pytest.approx([0., 1 / 2, 2 / 3, 0.75, 0.75])
    decays = [hook.ema_decay(t) for t in range(2, 9)]
    assert decays == pytest.approx([0., 1 / 2, 2 / 3, 0.75, 0.75, 0.75, 0.75])


def test_warmup_copy_exactly_at_t_w():
    model = FakeMeanTeacher(ConvBN(), ConvBN())
    runner = fake_runner(model)
    hook = MeanTeacherHook(warmup_iters=3)
    hook.before_train(runner)
    student, teacher = model.student, model.teacher
    with torch.no_grad():
        student.bn.running_mean.fill_(5.)
    student.bn.num_batches_tracked.fill_(9)
    for cur_iter in range(3):
        runner.iter = cur_iter
        hook.before_train_iter(runner, batch_idx=cur_iter)
        assert model.semi_active is False
        assert not torch.equal(teacher.conv.weight, student.conv.weight)
        assert teacher.bn.num_batches_tracked.item() == 0
    runner.iter = 3
    hook.before_train_iter(runner, batch_idx=3)
    assert model.semi_active is True
    for (name, t), (_, s) in zip(teacher.state_dict().items(),
                                 student.state_dict().items()):
        assert torch.equal(t, s), name
    # later iterations do not copy again
    with torch.no_grad():
        student.conv.weight.add_(1.)
    runner.iter = 4
    hook.before_train_iter(runner, batch_idx=4)
    assert not torch.equal(teacher.conv.weight, student.conv.weight)


def test_no_warmup_copies_before_train_only_at_start():
    model = FakeMeanTeacher(OneParam(1.), OneParam(7.))
    hook = MeanTeacherHook()
    hook.before_train(fake_runner(model, cur_iter=0))
    assert model.teacher.w.item() == 1.
    # resuming at iteration 5 keeps the checkpointed teacher
    set_value(model.teacher, 7.)
    runner = fake_runner(model, cur_iter=5)
    hook.before_train(runner)
    assert model.teacher.w.item() == 7.
    hook.before_train_iter(runner, batch_idx=5)
    assert model.semi_active is True
    assert model.teacher.w.item() == 7.
    # after iteration 5 with t_w = 0: d = min(1 - 1/6, 0.99) = 5/6
    hook.after_train_iter(runner, batch_idx=5)
    assert model.teacher.w.item() == pytest.approx(5 / 6 * 7. + 1 / 6 * 1.)


@pytest.mark.parametrize('average_buffers', [True, False])
def test_buffers_averaged_or_copied(average_buffers):
    model = FakeMeanTeacher(ConvBN(), ConvBN())
    with torch.no_grad():
        model.teacher.conv.weight.fill_(2.)
        model.student.conv.weight.fill_(4.)
        model.teacher.bn.running_mean.fill_(0.)
        model.student.bn.running_mean.fill_(4.)
    model.teacher.bn.num_batches_tracked.fill_(1)
    model.student.bn.num_batches_tracked.fill_(7)
    hook = MeanTeacherHook(warmup_iters=1, average_buffers=average_buffers)
    runner = fake_runner(model, cur_iter=2)
    hook.before_train(runner)
    hook.after_train_iter(runner, batch_idx=2)  # d = 1 - 1/2 = 0.5
    assert torch.allclose(model.teacher.conv.weight, torch.tensor(3.))
    expected_mean = 2. if average_buffers else 4.
    assert torch.allclose(model.teacher.bn.running_mean,
                          torch.tensor(expected_mean))
    assert model.teacher.bn.num_batches_tracked.item() == 7
    assert model.teacher.bn.num_batches_tracked.dtype == torch.long
    # the student is never modified
    assert torch.allclose(model.student.conv.weight, torch.tensor(4.))
    assert torch.allclose(model.student.bn.running_mean, torch.tensor(4.))


def test_teacher_follows_the_student_during_warmup():
    model = FakeMeanTeacher(OneParam(1.), OneParam(3.))
    runner = fake_runner(model, cur_iter=4)
    hook = MeanTeacherHook(warmup_iters=5)
    hook.before_train(runner)
    assert model.teacher.w.item() == 3.  # before training: untouched
    hook.after_train_iter(runner, batch_idx=4)
    assert model.teacher.w.item() == 1.  # a copy, not an EMA step
    assert 'train/ema_decay' not in runner.message_hub.log_scalars


def test_warmup_epochs_converted_with_dataloader_length():
    model = FakeMeanTeacher(OneParam(1.), OneParam(3.))
    runner = fake_runner(model, dataloader_len=5)
    hook = MeanTeacherHook(warmup_epochs=2)
    hook.before_train(runner)
    assert hook.t_w == 10
    runner.iter = 9
    hook.before_train_iter(runner, batch_idx=9)
    assert model.semi_active is False and model.teacher.w.item() == 3.
    runner.iter = 10
    hook.before_train_iter(runner, batch_idx=10)
    assert model.semi_active is True and model.teacher.w.item() == 1.


def test_model_wrapper_is_unwrapped():
    inner = FakeMeanTeacher(OneParam(1.), OneParam(3.))
    runner = fake_runner(MeanTeacherHookTestWrapper(inner), cur_iter=1)
    hook = MeanTeacherHook(warmup_iters=0)
    hook.before_train(runner)
    hook.before_train_iter(runner, batch_idx=1)
    set_value(inner.student, 5.)
    hook.after_train_iter(runner, batch_idx=1)  # d = 1/2
    assert inner.semi_active is True
    assert inner.teacher.w.item() == pytest.approx(4.)


def test_model_without_teacher_raises():
    model = nn.Module()
    model.student = OneParam(1.)
    with pytest.raises(AttributeError, match='teacher'):
        MeanTeacherHook().before_train(fake_runner(model))


def test_mismatching_networks_raise():
    model = FakeMeanTeacher(OneParam(1.), ConvBN())
    with pytest.raises(ValueError, match='differ by name'):
        MeanTeacherHook().before_train(fake_runner(model))
    student = OneParam(1.)
    student.w = nn.Parameter(torch.zeros(2))
    model = FakeMeanTeacher(student, OneParam(1.))
    with pytest.raises(ValueError, match='shape'):
        MeanTeacherHook().before_train(fake_runner(model))


@pytest.mark.parametrize('kwargs', [
    dict(warmup_iters=1, warmup_epochs=1),
    dict(warmup_iters=-1),
    dict(warmup_epochs=1.5),
    dict(max_decay=1.),
    dict(max_decay=-0.1),
])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match='MeanTeacherHook'):
        MeanTeacherHook(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_update_on_cuda():
    model = FakeMeanTeacher(ConvBN(), ConvBN()).cuda()
    runner = fake_runner(model, cur_iter=1)
    hook = MeanTeacherHook(warmup_iters=0)
    hook.before_train(runner)
    expected = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    with torch.no_grad():
        model.student.conv.weight.add_(2.)
    hook.after_train_iter(runner, batch_idx=1)  # d = 1/2
    assert torch.allclose(model.teacher.conv.weight,
                          expected['conv.weight'] + 1.)


# ---------------------------------------------------------------------------
# with a real mmengine runner: ``runner.iter`` semantics of the train loop
# ---------------------------------------------------------------------------
class ToyMeanTeacherModel(ReadsTheWarmupLikeTheSegmentor, BaseModel):
    """Student ``w`` trained towards 0 by SGD; teacher updated by the hook."""

    def __init__(self) -> None:
        super().__init__()
        self.student = OneParam(4.)
        self.teacher = OneParam(-1.)
        self.teacher.w.requires_grad_(False)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return dict(loss=(self.student.w**2).sum())


class RecordHook(Hook):
    priority = 'LOWEST'

    def __init__(self):
        self.records = []

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        model = runner.model
        self.records.append((runner.iter, model.semi_active,
                             model.student.w.item(), model.teacher.w.item()))


def toy_runner(tmp_path,
               model: nn.Module,
               max_iters: int,
               custom_hooks: list,
               optim_type: str = 'OptimWrapper') -> Runner:
    """A Runner training ``model`` on 2 dummy samples, batch 1, SGD 0.1."""
    return Runner(
        model=model,
        work_dir=str(tmp_path),
        experiment_name=f'test_mt_{uuid.uuid4().hex}',
        train_dataloader=dict(
            dataset=[dict(inputs=torch.zeros(1))] * 2,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=1,
            num_workers=0),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=100),
        optim_wrapper=dict(
            type=optim_type, optimizer=dict(type='SGD', lr=0.1)),
        custom_hooks=custom_hooks,
        default_hooks=dict(checkpoint=None, logger=None),
        default_scope='mmseg')


def test_with_runner(tmp_path):
    torch.set_num_threads(1)
    record = RecordHook()
    runner = toy_runner(
        tmp_path,
        ToyMeanTeacherModel(),
        max_iters=6,
        custom_hooks=[
            dict(type='MeanTeacherHook', warmup_epochs=1, max_decay=0.6),
            record
        ])
    runner.train()
    # warm-up = 1 epoch = 2 iterations; student after step t: 4 * 0.8^(t+1)
    assert [r[0] for r in record.records] == list(range(6))
    assert [r[1] for r in record.records] == [False] * 2 + [True] * 4
    for cur_iter, _, student, recorded_teacher in record.records:
        assert student == pytest.approx(4. * 0.8**(cur_iter + 1))
        if cur_iter >= 2:
            decay = min(1. - 1. / (cur_iter - 2 + 1), 0.6)
            teacher = decay * teacher + (1. - decay) * student
        else:  # the warm-up: the teacher follows the student
            teacher = student
        assert recorded_teacher == pytest.approx(teacher), cur_iter


# ---------------------------------------------------------------------------
# steps that must not reach the teacher
# ---------------------------------------------------------------------------
class OverflowingModel(ToyMeanTeacherModel):
    """Infinite gradients at ``overflow_iters``: AMP skips those steps."""

    def __init__(self, overflow_iters) -> None:
        super().__init__()
        self.overflow_iters = overflow_iters

    def forward(self, inputs, data_samples=None, mode='tensor'):
        loss = (self.student.w**2).sum()
        if MessageHub.get_current_instance().get_info(
                'iter') in self.overflow_iters:
            loss = loss * float('inf')
        return dict(loss=loss)


def test_amp_overflow_does_not_update_the_teacher(tmp_path):
    import mmseg_u2pl.engine.optimizers  # noqa: F401  (CPUAmpOptimWrapper)
    torch.set_num_threads(1)
    record = RecordHook()
    runner = toy_runner(
        tmp_path,
        OverflowingModel(overflow_iters={3}),
        max_iters=5,
        custom_hooks=[dict(type='MeanTeacherHook', warmup_iters=1), record],
        optim_type='CPUAmpOptimWrapper')
    runner.train()
    students = [r[2] for r in record.records]
    teachers = [r[3] for r in record.records]
    # student 4 * 0.8^k, frozen by the skipped step at iteration 3
    assert students == pytest.approx([3.2, 2.56, 2.048, 2.048, 1.6384])
    # iter 1: copy, d=0; iter 2: d=1/2; iter 3: no update (it would give
    # 2/3 * 2.304 + 1/3 * 2.048); iter 4: d=3/4
    assert teachers[1:] == pytest.approx(
        [2.56, 2.304, 2.304, 0.75 * 2.304 + 0.25 * 1.6384])
    assert runner.optim_wrapper.loss_scaler.get_scale() == 2.**15
    overflow, _ = runner.message_hub.get_scalar(
        'train/amp_overflow_steps').data
    assert overflow.tolist() == [1, 1]  # logged at iterations 3 and 4
    hook = [h for h in runner.hooks if isinstance(h, MeanTeacherHook)][0]
    assert hook.amp_overflow_steps == 1
    assert not hook._optimizer_hooks  # removed after training


def test_a_skipped_step_does_not_update_the_teacher():
    """The segmentor's train_step leaves the student of a skipped step
    unchanged (tests/test_models/test_segmentors/test_nonfinite.py); the
    hook leaves the teacher alone."""
    model = FakeMeanTeacher(ConvBN(), ConvBN())
    optimizer = torch.optim.SGD(
        model.student.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    runner = fake_runner(model, cur_iter=1)
    runner.optim_wrapper = OptimWrapper(optimizer)
    hook = MeanTeacherHook(warmup_iters=0)
    hook.before_train(runner)
    for step_skipped in (False, True):
        model.step_skipped = step_skipped
        teacher = {k: v.clone() for k, v in model.teacher.state_dict().items()}
        hook.before_train_iter(runner, batch_idx=runner.iter)
        runner.optim_wrapper.update_params(
            sum(p.sum() for p in model.student.parameters()))
        hook.after_train_iter(runner, batch_idx=runner.iter)
        changed = [
            k for k, v in model.teacher.state_dict().items()
            if not torch.equal(v, teacher[k])
        ]
        if step_skipped:
            assert changed == []
        else:
            assert 'conv.weight' in changed
        runner.iter += 1
    hook.after_train(runner)
    assert not hook._optimizer_hooks
