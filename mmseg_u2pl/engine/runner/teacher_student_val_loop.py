# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Validation of both networks of a mean-teacher segmentor."""
from typing import Dict, Sequence, Union

from mmengine.logging import print_log
from mmengine.runner import ValLoop
from mmengine.runner.loops import _parse_losses
from mmseg.registry import LOOPS
from torch import nn

from ...utils import unwrap_model

#: The networks validated, in this order.
BRANCHES: Sequence[str] = ('teacher', 'student')
#: MessageHub runtime info (saved in checkpoints): the network that
#: validated better last time, the metric and both values.
BETTER_NETWORK_KEY = 'semi_better_network'
_UNSET = object()


@LOOPS.register_module()
class TeacherStudentValLoop(ValLoop):
    """Validate the teacher and the student, reporting both.

    The validation set is run once per network by setting the model's
    ``semi_test_cfg['predict_on']`` to ``'teacher'`` and then ``'student'``;
    the original value is restored afterwards (also on error). Metrics are
    reported prefixed with the network's name (``teacher/mIoU``,
    ``student/mIoU``, ...), so a checkpoint hook can select on either, e.g.
    ``default_hooks = dict(checkpoint=dict(save_best='teacher/mIoU'))``.

    The better network on ``select_on`` (the teacher on a tie) is logged,
    its value reported as ``better/<metric>`` (``save_best='better/mIoU'``
    keeps the checkpoint whose better network is best) and its name kept
    in the MessageHub under :data:`BETTER_NETWORK_KEY`, which checkpoints
    save: ``tools/model_converters/export_checkpoint.py`` exports that
    network by default.

    Hooks are called as in mmengine's ``ValLoop``: ``before_val`` and
    ``before_val_epoch`` once, ``before_val_iter``/``after_val_iter`` for
    every batch of both passes, ``after_val_epoch`` once with the merged
    metrics, then ``after_val``.

    Args:
        runner (Runner): A reference of runner.
        dataloader (Dataloader or dict): A dataloader object or a dict to
            build a dataloader.
        evaluator (Evaluator or dict or list): Used for computing metrics.
        fp16 (bool): Whether to validate under autocast. Defaults to False.
        select_on (str): Metric that decides the better network (higher is
            better). Defaults to ``'mIoU'``.

    Example:
        >>> val_cfg = dict(type='TeacherStudentValLoop')
    """

    def __init__(self,
                 runner,
                 dataloader,
                 evaluator: Union[dict, list],
                 fp16: bool = False,
                 select_on: str = 'mIoU') -> None:
        super().__init__(runner, dataloader, evaluator, fp16)
        self.select_on = select_on

    def run(self) -> Dict[str, float]:
        """Launch validation of the teacher and the student.

        Returns:
            dict: Metrics of both networks, keys prefixed by ``teacher/`` and
            ``student/``.
        """
        model = self._mean_teacher_model()
        self.runner.call_hook('before_val')
        self.runner.call_hook('before_val_epoch')
        self.runner.model.eval()

        semi_test_cfg = model.semi_test_cfg
        original = semi_test_cfg.get('predict_on', _UNSET)
        metrics: Dict[str, float] = dict()
        try:
            for branch in BRANCHES:
                semi_test_cfg['predict_on'] = branch
                branch_metrics = self._run_branch(branch)
                metrics.update({
                    f'{branch}/{name}': value
                    for name, value in branch_metrics.items()
                })
        finally:
            if original is _UNSET:
                semi_test_cfg.pop('predict_on', None)
            else:
                semi_test_cfg['predict_on'] = original
        metrics.update(self._choose_better(metrics))

        self.runner.call_hook('after_val_epoch', metrics=metrics)
        self.runner.call_hook('after_val')
        return metrics

    def _run_branch(self, branch: str) -> Dict[str, float]:
        """One pass over the validation set with the current network.

        The evaluator's log (e.g. mmseg's per-class table) is headed by the
        network's name.

        Returns:
            dict: The evaluator's metrics plus the validation losses, if the
            model returns any.
        """
        self.val_loss.clear()
        for idx, data_batch in enumerate(self.dataloader):
            self.run_iter(idx, data_batch)
        print_log(f'Validation of the {branch}:', logger='current')
        metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
        if self.val_loss:
            metrics.update(_parse_losses(self.val_loss, 'val'))
        return metrics

    def _choose_better(self, metrics: Dict[str, float]) -> Dict[str, float]:
        """``better/<select_on>``, logged and kept in the MessageHub."""
        values = [
            metrics.get(f'{branch}/{self.select_on}') for branch in BRANCHES
        ]
        if None in values:
            raise KeyError(
                f'TeacherStudentValLoop: select_on={self.select_on!r} is '
                f'not a metric of the evaluator (got {sorted(metrics)}); '
                "set val_cfg.select_on to one of them, e.g. 'mIoU'.")
        teacher, student = (float(v) for v in values)
        better = 'student' if student > teacher else 'teacher'
        print_log(
            f'The {better} validates better: {self.select_on} teacher '
            f'{teacher:.2f}, student {student:.2f}.',
            logger='current')
        self.runner.message_hub.update_info(
            BETTER_NETWORK_KEY,
            dict(
                network=better,
                metric=self.select_on,
                teacher=teacher,
                student=student,
                iter=self.runner.iter))
        return {f'better/{self.select_on}': max(teacher, student)}

    def _mean_teacher_model(self) -> nn.Module:
        """The unwrapped model, checked for what this loop needs."""
        model = unwrap_model(self.runner.model)
        missing = [
            name for name in ('teacher', 'student', 'semi_test_cfg')
            if not hasattr(model, name)
        ]
        if missing:
            raise AttributeError(
                'TeacherStudentValLoop needs a mean-teacher model with '
                '`teacher`, `student` and `semi_test_cfg`, but '
                f'{type(model).__name__} has no {missing}. Use '
                "val_cfg=dict(type='ValLoop') for other models.")
        if model.semi_test_cfg is None or not hasattr(model.semi_test_cfg,
                                                      'get'):
            raise TypeError(
                'TeacherStudentValLoop: model.semi_test_cfg must be a dict '
                f'such as dict(predict_on=\'teacher\'), got '
                f'{model.semi_test_cfg!r}. Set semi_test_cfg in the model '
                'config.')
        return model
