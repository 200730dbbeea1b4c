# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Mean-teacher schedule of U2PL (paper Sec. 3.1).

The teacher is never touched by the optimizer. This hook

* publishes the supervised-only warm-up length ``t_w`` in the runtime info
  of the ``MessageHub`` (the segmentor reads it there, as it reads the
  iteration),
* keeps the teacher an exact copy of the student during the warm-up, and
* afterwards moves the teacher towards the student by an exponential moving
  average whose decay ``d = min(1 - 1 / (t - t_w + 1), max_decay)`` grows
  from 0 (exact copy) to ``max_decay``.

It also keeps bad steps away from the teacher: after a step the segmentor
skipped for a non-finite loss (``model.step_skipped``; its ``train_step``
left the student unchanged), or whose optimizer step AMP's ``GradScaler``
skipped (gradient overflow), the teacher is not updated.

Everything is derived from ``runner.iter``, so resuming a run needs no state
besides the checkpointed teacher weights.
"""
from typing import List, Optional, Tuple

from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapperDict
from mmseg.registry import HOOKS
from torch import Tensor, nn

from ...models.utils.ema import copy_tensors, ema_tensors, paired_tensors
from ...utils import WARMUP_ITERS_KEY, is_int, is_semi_iter, unwrap_model

DATA_BATCH = Optional[dict]


def optim_wrappers_of(optim_wrapper) -> list:
    """The optimizer wrappers of ``runner.optim_wrapper`` (one or a dict).

    Args:
        optim_wrapper: An ``OptimWrapper``, an ``OptimWrapperDict`` or
            anything else (e.g. None outside a Runner).

    Returns:
        list: The wrappers that hold an ``optimizer``; empty otherwise.
    """
    if isinstance(optim_wrapper, OptimWrapperDict):
        wrappers = list(optim_wrapper.values())
    else:
        wrappers = [optim_wrapper]
    return [w for w in wrappers if hasattr(w, 'optimizer')]


@HOOKS.register_module()
class MeanTeacherHook(Hook):
    """Warm-up switch, warm-up copy and EMA teacher update of U2PL.

    The model (``runner.model``, unwrapped from DDP if needed) must have
    ``student`` and ``teacher`` networks of identical architecture, like
    ``MeanTeacherSegmentor``. The hook reads the model and writes the
    teacher only. With ``t_w`` the warm-up length in iterations and
    ``runner.iter`` the 0-based iteration:

    * before training, ``t_w`` is published as the runtime info
      ``'semi_warmup_iters'``; the segmentor's losses are semi-supervised
      from iteration ``t_w`` on (:func:`~mmseg_u2pl.utils.is_semi_iter`);
    * after every warm-up iteration ``t < t_w``, and before iteration
      ``t_w`` (or before training when ``t_w == 0``), the teacher becomes an
      exact copy of the student (parameters and buffers): it follows the
      student through the warm-up, as in the reference code where the two
      share their parameters until the EMA starts, so that validation and
      best-checkpoint selection during the warm-up see a trained teacher;
    * after every iteration ``t >= t_w``, with
      ``d = min(1 - 1 / (t - t_w + 1), max_decay)`` (0, 1/2, 2/3, ...),
      ``teacher = d * teacher + (1 - d) * student`` for the parameters and,
      with ``average_buffers``, for the floating-point buffers (BN running
      statistics); integer buffers (``num_batches_tracked``) are copied. The
      decay is logged as ``train/ema_decay``.

    Bad steps never reach the teacher: if the segmentor skipped the step for
    a non-finite loss (``model.step_skipped``, see
    ``MeanTeacherSegmentor``), the EMA update is skipped. An optimizer step
    post-hook, registered before training, tells whether the optimizer
    stepped: if the optimizer wrapper was due to step but the optimizer did
    not (AMP's ``GradScaler`` skips steps whose gradients overflow), the
    EMA update is skipped too and counted in ``train/amp_overflow_steps``.

    Args:
        warmup_iters (int, optional): Supervised-only warm-up length in
            iterations. Defaults to None.
        warmup_epochs (int, optional): Warm-up length in epochs, converted
            with ``len(runner.train_dataloader)`` before training. Give at
            most one of ``warmup_iters`` and ``warmup_epochs``; neither means
            no warm-up. Defaults to None.
        max_decay (float): Upper bound of the EMA decay, in ``[0, 1)``.
            Defaults to 0.99.
        average_buffers (bool): Average floating-point buffers like the
            parameters; if False, all buffers are copied from the student.
            Defaults to True.

    Example:
        >>> custom_hooks = [
        ...     dict(type='MeanTeacherHook', warmup_iters=100, max_decay=0.99)
        ... ]
    """

    def __init__(self,
                 warmup_iters: Optional[int] = None,
                 warmup_epochs: Optional[int] = None,
                 max_decay: float = 0.99,
                 average_buffers: bool = True) -> None:
        if warmup_iters is not None and warmup_epochs is not None:
            raise ValueError(
                'MeanTeacherHook: give only one of warmup_iters '
                f'({warmup_iters}) and warmup_epochs ({warmup_epochs}), '
                'not both.')
        for name, value in dict(
                warmup_iters=warmup_iters,
                warmup_epochs=warmup_epochs).items():
            if value is None:
                continue
            if not is_int(value) or value < 0:
                raise ValueError(
                    f'MeanTeacherHook: {name} must be a non-negative int, '
                    f'got {value!r}.')
        if not 0. <= max_decay < 1.:
            raise ValueError('MeanTeacherHook: max_decay must be in [0, 1), '
                             f'got {max_decay!r}.')
        self.warmup_iters = warmup_iters
        self.warmup_epochs = warmup_epochs
        self.max_decay = float(max_decay)
        self.average_buffers = average_buffers
        # Derived from the config (and the dataloader length) in
        # ``before_train``; not training state.
        self.t_w = warmup_iters or 0
        # Per-iteration bookkeeping of the optimizer steps (not state).
        self._optimizer_hooks: list = []
        self._wrappers: list = []
        self._step_expected = False
        self._optimizer_stepped = False
        #: EMA updates skipped after a GradScaler overflow in this process
        self.amp_overflow_steps = 0

    def before_train(self, runner) -> None:
        """Resolve the warm-up length, check the model, copy if no warm-up.

        The batch size is checked against the unlabeled set when the train
        dataset has ``check_batch_size`` (``SemiDataset``).

        Args:
            runner (Runner): The runner of the training process.
        """
        if self.warmup_epochs is not None:
            self.t_w = self.warmup_epochs * len(runner.train_dataloader)
        else:
            self.t_w = self.warmup_iters or 0
        model = self._get_model(runner)
        # Fail at start when the batch does not fit the unlabeled set.
        dataloader = runner.train_dataloader
        dataset = getattr(dataloader, 'dataset', None)
        batch_size = getattr(dataloader, 'batch_size', None)
        if hasattr(dataset, 'check_batch_size') and batch_size is not None:
            dataset.check_batch_size(batch_size, get_world_size())
        # Fail early on mismatching networks, not after the warm-up.
        self._pairs(model, 'parameters')
        self._pairs(model, 'buffers')
        runner.message_hub.update_info(WARMUP_ITERS_KEY, self.t_w)
        if self.t_w == 0 and runner.iter == 0:
            self._copy_student_to_teacher(model)
        self._register_optimizer_hooks(runner)

    def after_train(self, runner) -> None:
        """Remove the optimizer step hooks.

        Args:
            runner (Runner): The runner of the training process.
        """
        self._remove_optimizer_hooks()

    def _register_optimizer_hooks(self, runner) -> None:
        """Watch every optimizer of the run (see the class docstring)."""
        self._remove_optimizer_hooks()
        self._wrappers = optim_wrappers_of(
            getattr(runner, 'optim_wrapper', None))
        for wrapper in self._wrappers:
            self._optimizer_hooks.append(
                wrapper.optimizer.register_step_post_hook(self._mark_stepped))

    def _remove_optimizer_hooks(self) -> None:
        for handle in self._optimizer_hooks:
            handle.remove()
        self._optimizer_hooks, self._wrappers = [], []

    def _mark_stepped(self, *args) -> None:
        """Optimizer step post-hook: the optimizer did step."""
        self._optimizer_stepped = True

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: DATA_BATCH = None) -> None:
        """Copy the student into the teacher before iteration ``t_w``.

        Args:
            runner (Runner): The runner of the training process.
            batch_idx (int): The index of the current batch in the loop.
            data_batch (dict, optional): Data from the dataloader.
        """
        if self.t_w > 0 and runner.iter == self.t_w:
            self._copy_student_to_teacher(self._get_model(runner))
        # due to step (no gradient accumulation pending) in this iteration?
        self._step_expected = any(
            getattr(wrapper, 'should_sync', lambda: True)()
            for wrapper in self._wrappers)
        self._optimizer_stepped = False

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        """Teacher update: a copy in the warm-up, then the EMA.

        The EMA update is skipped when the step was skipped (non-finite
        loss or AMP overflow).

        Args:
            runner (Runner): The runner of the training process.
            batch_idx (int): The index of the current batch in the loop.
            data_batch (dict, optional): Data from the dataloader.
            outputs (dict, optional): Outputs of the model.
        """
        model = self._get_model(runner)
        if not is_semi_iter(runner.iter, self.t_w):
            # the teacher follows the student through the warm-up (the
            # reference shares their parameters until the EMA starts), so
            # that validations and checkpoints of the warm-up hold a usable
            # teacher; nothing in the warm-up's losses reads the teacher
            self._copy_student_to_teacher(model)
            return
        if getattr(model, 'step_skipped', False):
            return  # non-finite loss: the segmentor logs it
        if self._step_expected and not self._optimizer_stepped:
            self.amp_overflow_steps += 1
            runner.message_hub.update_scalar('train/amp_overflow_steps',
                                             self.amp_overflow_steps)
            return
        if self.amp_overflow_steps:
            runner.message_hub.update_scalar('train/amp_overflow_steps',
                                             self.amp_overflow_steps)
        decay = self.ema_decay(runner.iter)
        ema_tensors(self._pairs(model, 'parameters'), decay)
        averaged, copied = [], []
        for pair in self._pairs(model, 'buffers'):
            if self.average_buffers and pair[0].is_floating_point():
                averaged.append(pair)
            else:
                copied.append(pair)
        ema_tensors(averaged, decay)
        copy_tensors(copied)
        runner.message_hub.update_scalar('train/ema_decay', decay)

    def ema_decay(self, cur_iter: int) -> float:
        """EMA decay after iteration ``cur_iter`` (``>= t_w``).

        Args:
            cur_iter (int): 0-based index of the iteration just done.

        Returns:
            float: ``min(1 - 1 / (cur_iter - t_w + 1), max_decay)``.
        """
        return min(1. - 1. / (cur_iter - self.t_w + 1), self.max_decay)

    @staticmethod
    def _get_model(runner) -> nn.Module:
        """The unwrapped model, checked for ``student`` and ``teacher``."""
        model = unwrap_model(runner.model)
        missing = [
            name for name in ('student', 'teacher')
            if not isinstance(getattr(model, name, None), nn.Module)
        ]
        if missing:
            raise AttributeError(
                f'MeanTeacherHook needs a model with `student` and `teacher` '
                f'networks, but {type(model).__name__} has no {missing}. '
                'Use a mean-teacher segmentor (e.g. model=dict(type='
                "'MeanTeacherSegmentor', ...)) or remove MeanTeacherHook "
                'from custom_hooks.')
        return model

    @staticmethod
    def _pairs(model: nn.Module, kind: str) -> List[Tuple[Tensor, Tensor]]:
        """``(teacher, student)`` tensor pairs of ``kind``."""
        return paired_tensors(model.teacher, model.student, kind)

    def _copy_student_to_teacher(self, model: nn.Module) -> None:
        """Make the teacher an exact copy of the student."""
        copy_tensors(self._pairs(model, 'parameters'))
        copy_tensors(self._pairs(model, 'buffers'))
