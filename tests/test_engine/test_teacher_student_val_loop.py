# Copyright (c) mmseg_u2pl contributors. All rights reserved.
import uuid

import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mmseg_u2pl.engine.runner.teacher_student_val_loop import (
    BETTER_NETWORK_KEY, TeacherStudentValLoop)

# 2x2 ground truth: class 0 on one pixel, class 1 on three
GT = torch.tensor([[[0, 1], [1, 1]]])


class ToySegDataset(Dataset):
    metainfo = dict(classes=('background', 'thing'))

    def __len__(self):
        return 4

    def __getitem__(self, idx):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=GT.clone())
        return dict(inputs=torch.zeros(1, 2, 2), data_samples=sample)


class ToyMeanTeacher(BaseModel):
    """The teacher predicts the ground truth, the student all zeros."""

    def __init__(self, predict_on='teacher', with_semi_test_cfg=True):
        super().__init__()
        self.teacher = nn.Identity()
        self.student = nn.Identity()
        if with_semi_test_cfg:
            self.semi_test_cfg = dict(predict_on=predict_on)
        self.fail_on = None

    def forward(self, inputs, data_samples=None, mode='tensor'):
        predict_on = self.semi_test_cfg['predict_on']
        if predict_on == self.fail_on:
            raise RuntimeError('prediction failed')
        for sample in data_samples:
            gt = sample.gt_sem_seg.data
            pred = gt if predict_on == 'teacher' else torch.zeros_like(gt)
            sample.pred_sem_seg = PixelData(data=pred)
        return data_samples


class RecordHook(Hook):

    def __init__(self):
        self.calls = []
        self.iter_networks = []
        self.epoch_metrics = None

    def before_val(self, runner):
        self.calls.append('before_val')

    def before_val_epoch(self, runner):
        self.calls.append('before_val_epoch')

    def before_val_iter(self, runner, batch_idx, data_batch=None):
        self.iter_networks.append(
            (batch_idx, runner.model.semi_test_cfg['predict_on']))

    def after_val_epoch(self, runner, metrics=None):
        self.calls.append('after_val_epoch')
        self.epoch_metrics = dict(metrics)

    def after_val(self, runner):
        self.calls.append('after_val')


def build_runner(tmp_path, model, hook, fp16=False, **loop_args):
    torch.set_num_threads(1)
    val_cfg = dict(type='TeacherStudentValLoop', **loop_args)
    if fp16:
        val_cfg['fp16'] = True
    return Runner(
        model=model,
        work_dir=str(tmp_path),
        experiment_name=f'test_ts_val_{uuid.uuid4().hex}',
        val_dataloader=DataLoader(
            ToySegDataset(), batch_size=2, collate_fn=pseudo_collate),
        val_evaluator=dict(type='IoUMetric', iou_metrics=['mIoU']),
        val_cfg=val_cfg,
        custom_hooks=[hook],
        default_hooks=dict(checkpoint=None),
        default_scope='mmseg')


def test_each_evaluation_log_is_headed_by_its_network(tmp_path, monkeypatch):
    """mmseg's per-class table follows a line naming the network."""
    from mmseg_u2pl.engine.runner import teacher_student_val_loop as module
    runner = build_runner(tmp_path, ToyMeanTeacher(), RecordHook())
    events = []
    monkeypatch.setattr(module, 'print_log',
                        lambda msg, **kwargs: events.append(msg))
    evaluate = runner.val_loop.evaluator.evaluate

    def recording_evaluate(size):
        events.append('table')
        return evaluate(size)

    runner.val_loop.evaluator.evaluate = recording_evaluate
    runner.val()
    assert events == [
        'Validation of the teacher:', 'table', 'Validation of the student:',
        'table',
        'The teacher validates better: mIoU teacher 100.00, student 12.50.'
    ]


@pytest.mark.parametrize('predict_on', ['teacher', 'student'])
def test_reports_both_networks_and_restores(tmp_path, predict_on):
    hook = RecordHook()
    model = ToyMeanTeacher(predict_on=predict_on)
    runner = build_runner(tmp_path, model, hook)
    metrics = runner.val()
    assert isinstance(runner.val_loop, TeacherStudentValLoop)
    # teacher: perfect. student (all class 0): IoU_0 = 4 / 16, IoU_1 = 0,
    # mIoU = 12.5 %, pixel accuracy = 4 / 16 = 25 %.
    assert metrics['teacher/mIoU'] == pytest.approx(100.)
    assert metrics['teacher/aAcc'] == pytest.approx(100.)
    assert metrics['student/mIoU'] == pytest.approx(12.5)
    assert metrics['student/aAcc'] == pytest.approx(25.)
    assert not any(key in metrics for key in ('mIoU', 'aAcc'))
    # the better network's value, and its name for checkpoints and export
    assert metrics['better/mIoU'] == pytest.approx(100.)
    assert [key for key in metrics if key.startswith('better/')] == [
        'better/mIoU'
    ]
    assert all(
        key.split('/')[0] in ('teacher', 'student', 'better')
        for key in metrics)
    choice = runner.message_hub.get_info(BETTER_NETWORK_KEY)
    assert choice == dict(
        network='teacher',
        metric='mIoU',
        teacher=pytest.approx(100.),
        student=pytest.approx(12.5),
        iter=0)
    assert model.semi_test_cfg['predict_on'] == predict_on
    assert hook.calls == [
        'before_val', 'before_val_epoch', 'after_val_epoch', 'after_val'
    ]
    assert hook.epoch_metrics == metrics
    assert hook.iter_networks == [(0, 'teacher'), (1, 'teacher'),
                                  (0, 'student'), (1, 'student')]


def test_unset_predict_on_stays_unset(tmp_path):
    model = ToyMeanTeacher()
    del model.semi_test_cfg['predict_on']
    metrics = build_runner(tmp_path, model, RecordHook()).val()
    assert metrics['student/mIoU'] == pytest.approx(12.5)
    assert 'predict_on' not in model.semi_test_cfg


def test_restores_predict_on_after_error(tmp_path):
    model = ToyMeanTeacher(predict_on='teacher')
    model.fail_on = 'student'
    runner = build_runner(tmp_path, model, RecordHook())
    with pytest.raises(RuntimeError, match='prediction failed'):
        runner.val()
    assert model.semi_test_cfg['predict_on'] == 'teacher'


def test_fp16_flag(tmp_path):
    runner = build_runner(tmp_path, ToyMeanTeacher(), RecordHook(), fp16=True)
    runner.val_loop  # builds the loop
    assert runner.val_loop.fp16 is True


def test_model_without_semi_test_cfg_raises(tmp_path):
    model = ToyMeanTeacher(with_semi_test_cfg=False)
    runner = build_runner(tmp_path, model, RecordHook())
    with pytest.raises(AttributeError, match='semi_test_cfg'):
        runner.val()


def test_the_student_is_chosen_when_it_validates_better(tmp_path):
    """Ties go to the teacher; a better student is named and reported."""
    model = ToyMeanTeacher()
    # swap the roles: the student predicts the ground truth
    forward = model.forward

    def swapped(inputs, data_samples=None, mode='tensor'):
        cfg = model.semi_test_cfg
        original = cfg['predict_on']
        cfg['predict_on'] = dict(
            teacher='student', student='teacher')[original]
        try:
            return forward(inputs, data_samples, mode)
        finally:
            cfg['predict_on'] = original

    model.forward = swapped
    runner = build_runner(tmp_path, model, RecordHook(), select_on='aAcc')
    metrics = runner.val()
    assert metrics['better/aAcc'] == pytest.approx(100.)
    assert runner.message_hub.get_info(BETTER_NETWORK_KEY)['network'] == \
        'student'


def test_a_tie_keeps_the_teacher(tmp_path):
    model = ToyMeanTeacher()
    forward = model.forward

    def both_perfect(inputs, data_samples=None, mode='tensor'):
        cfg = model.semi_test_cfg
        original = cfg['predict_on']
        cfg['predict_on'] = 'teacher'  # the student predicts as the teacher
        try:
            return forward(inputs, data_samples, mode)
        finally:
            cfg['predict_on'] = original

    model.forward = both_perfect
    runner = build_runner(tmp_path, model, RecordHook())
    metrics = runner.val()
    assert metrics['teacher/mIoU'] == metrics['student/mIoU']
    assert runner.message_hub.get_info(BETTER_NETWORK_KEY)['network'] == \
        'teacher'


def test_unknown_select_on_names_the_metrics(tmp_path):
    runner = build_runner(
        tmp_path, ToyMeanTeacher(), RecordHook(), select_on='mDice')
    with pytest.raises(KeyError, match="select_on='mDice'.*teacher/mIoU"):
        runner.val()
