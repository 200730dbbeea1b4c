# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Non-finite losses: find them, undo the step, decide skip or raise."""
import logging
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

import torch
from mmengine import dist
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from torch import Tensor, nn

from ...utils.misc import is_int, train_progress

#: what to do with a step whose loss has a NaN/Inf term
NONFINITE_ACTIONS = ('skip', 'raise')
DEFAULT_NONFINITE_CFG = dict(
    nonfinite_loss='skip',  # or 'raise'
    max_consecutive_nonfinite=5,  # more skipped steps in a row: raise
)
#: loss returned by a skipped step: zero, zero gradients for every parameter
SKIPPED_STEP_LOSS = 'skipped_step.loss'


def nonfinite_loss_terms(losses: Dict[str, object]) -> List[str]:
    """Names of the loss terms that are NaN or Inf on any rank.

    The terms are the entries whose key contains ``'loss'`` (those that
    ``parse_losses`` sums), tensors or lists of tensors. The flags are
    reduced over the ranks in one tensor and read with one host
    synchronisation, so that every rank takes the same decision.
    """
    names, finite = [], []
    for name, value in losses.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        tensors = [v for v in values if isinstance(v, Tensor)]
        if 'loss' not in name or not tensors:
            continue
        names.append(name)
        finite.append(
            torch.stack([torch.isfinite(v.detach()).all()
                         for v in tensors]).all())
    if not names:
        return []
    bad = (~torch.stack(finite)).int()
    dist.all_reduce(bad, op='sum')
    return [name for name, flag in zip(names, bad.tolist()) if flag]


def save_buffers(net: nn.Module) -> List[Tensor]:
    """Copies of ``net``'s buffers (e.g. BN statistics), in order."""
    return [buffer.detach().clone() for buffer in net.buffers()]


@torch.no_grad()
def restore_buffers(net: nn.Module, saved: List[Tensor]) -> None:
    """Write back the buffers :func:`save_buffers` copied, in place."""
    for buffer, value in zip(net.buffers(), saved):
        buffer.copy_(value)


@contextmanager
def optimizer_steps_dropped(optim_wrapper: OptimWrapper) -> Iterator[None]:
    """Optimizer steps inside the block change nothing.

    The gradients are dropped right before each step: torch optimizers
    leave a parameter without a gradient alone (its value, momentum and
    step counter), while backward, DDP's gradient reduction and AMP's
    ``GradScaler`` run as in any step.
    """

    def drop_gradients(optimizer, *args) -> None:
        for group in optimizer.param_groups:
            for param in group['params']:
                param.grad = None

    handle = optim_wrapper.optimizer.register_step_pre_hook(drop_gradients)
    try:
        yield
    finally:
        handle.remove()


def zero_loss(net: nn.Module) -> Tensor:
    """Zero with zero gradients for every trainable parameter of ``net``.

    Every parameter gets a (finite) gradient, as in a normal step, so that
    DDP's reducer and AMP's ``GradScaler`` need no special case.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        return torch.zeros((), requires_grad=True)
    return torch.stack([p.reshape(-1)[:1].sum()
                        for p in params]).float().sum() * 0.


def iteration_text() -> str:
    """``'iteration 3/6'`` (1-based, as logged), if a loop runs."""
    cur_iter, max_iters = train_progress()
    if cur_iter is None:
        return 'an unknown iteration (no training loop recorded it)'
    total = f'/{max_iters}' if max_iters else ''
    return f'iteration {cur_iter + 1}{total}'


class NonFiniteGuard:
    """Counts non-finite steps and raises where the settings say so.

    Args:
        nonfinite_loss (str): ``'skip'`` or ``'raise'``.
        max_consecutive_nonfinite (int, optional): More skipped steps in a
            row raise (the run diverged); None: no limit.
    """

    def __init__(self,
                 nonfinite_loss: str = 'skip',
                 max_consecutive_nonfinite: Optional[int] = 5) -> None:
        if nonfinite_loss not in NONFINITE_ACTIONS:
            raise ValueError(
                'model.semi_train_cfg.nonfinite_loss must be one of '
                f'{list(NONFINITE_ACTIONS)}, got {nonfinite_loss!r}.')
        limit = max_consecutive_nonfinite
        if limit is not None and (not is_int(limit) or limit < 1):
            raise ValueError(
                'model.semi_train_cfg.max_consecutive_nonfinite must be a '
                f'positive int or None (no limit), got {limit!r}.')
        self.action = nonfinite_loss
        self.limit = limit
        #: skipped steps since this process started (logged, not saved)
        self.total = 0
        self.consecutive = 0

    def record(self, bad_terms: List[str], can_skip: bool) -> None:
        """Count a step (undone already if ``bad_terms``); raise or warn.

        Args:
            bad_terms (list[str]): The non-finite loss terms, [] if none.
            can_skip (bool): Whether the caller applies a skipped step
                (the segmentor's own ``train_step``).
        """
        if not bad_terms:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.total += 1
        where = f'{bad_terms} at {iteration_text()}'
        if self.action == 'skip' and not can_skip:
            raise FloatingPointError(
                f'Non-finite loss (NaN/Inf) in {where}, outside the '
                'segmentor\'s train_step, which alone can skip the '
                'step. In distributed training use model_wrapper_cfg=dict('
                'type="MeanTeacherDistributedDataParallel") (tools/train.py '
                'sets it); or set model.semi_train_cfg.nonfinite_loss='
                '"raise".')
        if self.action == 'raise':
            raise FloatingPointError(
                f'Non-finite loss (NaN/Inf) in {where}. The step was not '
                'applied. Look for a corrupt image or label in this batch '
                'or lower the learning rate, then resume from the last '
                'checkpoint; or set model.semi_train_cfg.nonfinite_loss='
                '"skip" to skip such steps.')
        if self.limit is not None and self.consecutive > self.limit:
            raise FloatingPointError(
                f'Non-finite loss (NaN/Inf) in {where}: '
                f'{self.consecutive} steps in a row, more than '
                f'model.semi_train_cfg.max_consecutive_nonfinite='
                f'{self.limit}. Training has diverged: lower the learning '
                'rate, check the data, and resume from an earlier '
                'checkpoint.')
        print_log(
            f'Skipped a step with a non-finite loss (NaN/Inf) in {where}: '
            'the student, the teacher and the memory bank are unchanged '
            f'({self.consecutive} in a row, at most '
            f'{"unlimited" if self.limit is None else self.limit}; '
            f'{self.total} in total).',
            logger='current',
            level=logging.WARNING)
