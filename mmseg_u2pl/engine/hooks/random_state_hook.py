# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Random state of every rank, saved with checkpoints and restored on resume.

U2PL draws random numbers all the time: the data pipeline (crops, flips,
scales; ``numpy`` and ``random``), CutMix boxes, dropout and the sampling of
anchors and negatives (``torch``). A seed fixes them for a fresh run only: a
resumed run would start from the seed again and draw different numbers. This
module captures the generators of ``torch`` (CPU and the current CUDA
device), ``numpy`` and Python's ``random`` as plain tensors and numbers, which
load under ``torch.load(weights_only=True)`` without any allow-list.

* :func:`gather_random_states` collects the states of all ranks; the
  :class:`~mmseg_u2pl.engine.runner.ExactResumeRunner` calls it on every rank
  when it saves a checkpoint and stores the list as
  ``checkpoint['meta']['random_states']``.
* :class:`RandomStateHook` gives each rank its state back when a run resumes,
  right before the first new batch is loaded, and keeps validation from
  consuming the training random streams.
"""
import logging
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

RANDOM_STATES_KEY = 'random_states'

RandomState = Dict[str, Any]


def get_random_state() -> RandomState:
    """The state of this process's random generators.

    Returns:
        dict: ``torch`` (CPU generator, ``uint8`` tensor), ``cuda`` (the
        current device's generator, or None without CUDA), ``numpy``
        (MT19937 key as an ``int64`` tensor, position and cached Gaussian)
        and ``python`` (``random``'s internal state as an ``int64`` tensor
        and its cached Gaussian).
    """
    _, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = torch.cuda.get_rng_state()
    return dict(
        torch=torch.get_rng_state(),
        cuda=cuda,
        numpy=dict(
            key=torch.from_numpy(np_key.astype(np.int64)),
            pos=int(np_pos),
            has_gauss=int(np_has_gauss),
            cached_gaussian=float(np_gauss)),
        python=dict(
            version=int(py_version),
            internal=torch.tensor(py_internal, dtype=torch.int64),
            gauss_next=py_gauss))


def set_random_state(state: RandomState) -> None:
    """Give this process's random generators the state ``state``.

    Args:
        state (dict): As returned by :func:`get_random_state`. The CUDA state
            is restored when it was saved and CUDA is available.
    """
    torch.set_rng_state(state['torch'])
    if state['cuda'] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])
    np_state = state['numpy']
    np.random.set_state(
        ('MT19937', np_state['key'].numpy().astype(np.uint32), np_state['pos'],
         np_state['has_gauss'], np_state['cached_gaussian']))
    py_state = state['python']
    random.setstate((py_state['version'], tuple(py_state['internal'].tolist()),
                     py_state['gauss_next']))


def gather_random_states() -> List[RandomState]:
    """The random states of all ranks, in rank order.

    A collective call in distributed runs: every rank must call it.

    Returns:
        list[dict]: One :func:`get_random_state` per rank.
    """
    state = get_random_state()
    if get_world_size() == 1:
        return [state]
    return all_gather_object(state)


class _RestoreAfterReplay:
    """Iterator proxy restoring a random state after the resume replay.

    On resume MMEngine's ``IterBasedTrainLoop`` loads (and throws away) the
    batches already trained on, so that the data order continues; loading
    them draws random numbers. This proxy lets ``num_replayed`` batches
    through, then restores ``state`` right before the next batch and puts
    the loop's own iterator back.

    Args:
        loop: The train loop, with a ``dataloader_iterator``.
        num_replayed (int): Batches the loop replays.
        state (dict): The random state to restore.
    """

    def __init__(self, loop, num_replayed: int, state: RandomState) -> None:
        self._loop = loop
        self._iterator = loop.dataloader_iterator
        self._remaining = num_replayed
        self._state = state

    def __iter__(self) -> '_RestoreAfterReplay':
        return self

    def __next__(self) -> Any:
        if self._remaining > 0:
            self._remaining -= 1
            return next(self._iterator)
        set_random_state(self._state)
        self._loop.dataloader_iterator = self._iterator
        return next(self._iterator)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Resume each rank's random generators exactly; isolate validation.

    Together with :class:`~mmseg_u2pl.engine.runner.ExactResumeRunner`,
    which saves the states of all ranks in every checkpoint
    (``checkpoint['meta']['random_states']``), a resumed run draws the same
    random numbers as an uninterrupted run of the same seed:

    * ``after_load_checkpoint``: keeps the saved states of the checkpoint;
    * ``before_train``: if the run resumed from that checkpoint, each rank
      gets its own state back right before the first new batch is loaded,
      i.e. after the train loop has replayed the batches already trained on
      (whose loading draws random numbers too). Loading weights with
      ``load_from`` and no resume restores nothing.
    * ``before_val_epoch`` / ``after_val_epoch``: the state is saved before
      validation and restored after it, before the checkpoint hook saves a
      best checkpoint. Validation (e.g. ``iter(val_dataloader)`` draws a
      seed) then takes nothing from the training streams: the checkpoint
      saved before validation and its copy that ``CheckpointHook`` saves
      again after it when the best score improved hold the same state, and
      a resumed run, which skips that validation, stays in step. Training
      does not depend on ``val_interval``.

    ``ExactResumeRunner`` registers this hook by default (as
    ``default_hooks.random_state``); set ``random_state=None`` there to
    switch it off. A resume with another number of processes than the
    checkpoint was saved with cannot be exact: the hook warns and restores
    nothing.

    Example:
        >>> runner_type = 'ExactResumeRunner'  # adds the hook
        >>> # or, with any runner (saving then needs ExactResumeRunner):
        >>> custom_hooks = [dict(type='RandomStateHook')]
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._resumed_states: Optional[List[RandomState]] = None
        self._resumed_iter: Optional[int] = None
        self._before_val: Optional[RandomState] = None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep the random states saved in ``checkpoint``.

        Args:
            runner (Runner): The runner.
            checkpoint (dict): The loaded checkpoint.
        """
        meta = checkpoint.get('meta', {})
        self._resumed_states = meta.get(RANDOM_STATES_KEY)
        self._resumed_iter = meta.get('iter')

    def before_train(self, runner) -> None:
        """Arrange the restore of this rank's state after the replay.

        Args:
            runner (Runner): The runner.
        """
        if runner.iter == 0 or runner.iter != self._resumed_iter:
            return  # a fresh run, or weights loaded with `load_from`
        states, self._resumed_states = self._resumed_states, None
        if states is None:
            print_log(
                f'RandomStateHook: the checkpoint of iteration '
                f'{runner.iter} has no `meta.{RANDOM_STATES_KEY}` (it was '
                'not saved by ExactResumeRunner): the resumed run draws '
                'other random numbers than an uninterrupted run would. Set '
                "runner_type='ExactResumeRunner' to save them.",
                logger='current',
                level=logging.WARNING)
            return
        world_size = get_world_size()
        if len(states) != world_size:
            print_log(
                f'RandomStateHook: the checkpoint of iteration '
                f'{runner.iter} holds the random states of {len(states)} '
                f'processes but this run has {world_size}; they are not '
                'restored and the run continues from its seed. Resume with '
                f'{len(states)} processes for an exact resume.',
                logger='current',
                level=logging.WARNING)
            return
        state = states[get_rank()]
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator'):
            loop.dataloader_iterator = _RestoreAfterReplay(
                loop, runner.iter, state)
        else:  # epoch-based loops do not replay batches
            set_random_state(state)

    def before_val_epoch(self, runner) -> None:
        """Save the random state before validation.

        Args:
            runner (Runner): The runner.
        """
        self._before_val = get_random_state()

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        """Restore the random state saved before validation.

        Args:
            runner (Runner): The runner.
            metrics (dict, optional): Validation metrics.
        """
        if self._before_val is not None:
            set_random_state(self._before_val)
            self._before_val = None
