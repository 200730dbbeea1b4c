# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""A Runner whose checkpoints resume exactly and are written atomically."""
import logging
import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Union

from mmengine.dist import (all_gather_object, get_rank, get_world_size,
                           is_main_process)
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmseg.registry import RUNNERS
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

from ...utils import unwrap_model
from ..hooks.random_state_hook import (RANDOM_STATES_KEY, RandomStateHook,
                                       gather_random_states)
from .atomic_checkpoint import (TMP_SUFFIX, AtomicCheckpointHook,
                                replace_atomically)

HookCfg = Union[Hook, Dict, None]
_PLAIN_CHECKPOINT_HOOK = ('CheckpointHook', 'mmengine.CheckpointHook',
                          CheckpointHook)
RANK_NORM_BUFFERS_KEY = 'rank_norm_buffers'


def rank_norm_buffers(model: nn.Module) -> Dict[str, Tensor]:
    """Running statistics of the norm layers that ranks do not share.

    With ``BN`` (not ``SyncBN``) and DDP's ``broadcast_buffers=False`` every
    rank keeps its own running statistics (and so does the mean teacher,
    which averages them), while a checkpoint holds those of rank 0 only.
    ``SyncBatchNorm`` layers are left out: their statistics are the same on
    all ranks.

    Args:
        model (nn.Module): The bare model.

    Returns:
        dict[str, Tensor]: CPU copies by ``state_dict`` name.
    """
    buffers = {}
    for prefix, module in model.named_modules():
        if (not isinstance(module, _NormBase)
                or isinstance(module, nn.SyncBatchNorm)):
            continue
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None:
                key = f'{prefix}.{name}' if prefix else name
                buffers[key] = buffer.detach().cpu().clone()
    return buffers


def load_rank_norm_buffers(model: nn.Module, buffers: Dict[str,
                                                           Tensor]) -> None:
    """Copy ``buffers`` (from :func:`rank_norm_buffers`) into ``model``.

    Args:
        model (nn.Module): The bare model.
        buffers (dict[str, Tensor]): Running statistics by name.

    Raises:
        KeyError: If a name is not a buffer of ``model``.
    """
    own = dict(model.named_buffers())
    missing = sorted(set(buffers) - set(own))
    if missing:
        raise KeyError(
            f'ExactResumeRunner: the checkpoint has per-rank norm statistics '
            f'{missing[:5]} that the model does not have; resume with the '
            'config the checkpoint was trained with.')
    for name, value in buffers.items():
        own[name].copy_(value)


@RUNNERS.register_module()
class ExactResumeRunner(Runner):
    """MMEngine ``Runner`` for runs that may be killed at any time.

    A run killed at any point, even by ``SIGKILL`` while it writes a
    checkpoint, resumes (``--resume``) from its last complete checkpoint and
    continues as an uninterrupted run of the same seed would. Beside what
    every MMEngine checkpoint holds (model with the U2PL teacher, memory
    bank and prototypes, optimizer, parameter schedulers, message hub,
    iteration; the loop replays the data order), this runner

    * saves the random states of all ranks in
      ``checkpoint['meta']['random_states']`` (:func:`gather_random_states`,
      so :meth:`save_checkpoint` must be called on every rank, as
      ``CheckpointHook`` does) and registers
      :class:`~mmseg_u2pl.engine.hooks.RandomStateHook`, which restores
      them, as the default hook ``random_state``;
    * in multi-process runs, also saves the running statistics of every
      rank's unsynchronised norm layers (:func:`rank_norm_buffers`, in
      ``checkpoint['meta']['rank_norm_buffers']``) and gives each rank its
      own back when loading;
    * writes checkpoint files to a temporary file and renames it over the
      target (:func:`replace_atomically`), and uses
      :class:`AtomicCheckpointHook` where a config asks for MMEngine's
      ``CheckpointHook``, so that ``last_checkpoint`` always names a
      complete checkpoint.

    Everything else is MMEngine's ``Runner``.

    Example:
        >>> runner_type = 'ExactResumeRunner'  # in the config
        >>> # switch the random state part off:
        >>> default_hooks = dict(random_state=None)
    """

    def register_default_hooks(self,
                               hooks: Optional[Dict[str,
                                                    HookCfg]] = None) -> None:
        """Add ``random_state`` and make ``checkpoint`` atomic.

        Args:
            hooks (dict[str, Hook | dict | None], optional): The config's
                ``default_hooks``. ``random_state=None`` removes the
                :class:`RandomStateHook`; a ``checkpoint`` config of type
                ``CheckpointHook`` becomes an :class:`AtomicCheckpointHook`
                with the same arguments.
        """
        hooks = dict(hooks or {})
        if 'random_state' not in hooks:
            hooks['random_state'] = dict(type=RandomStateHook)
        elif hooks['random_state'] is None:
            hooks.pop('random_state')
        checkpoint = hooks.get('checkpoint',
                               dict(type='CheckpointHook', interval=1))
        if (isinstance(checkpoint, dict)
                and checkpoint.get('type') in _PLAIN_CHECKPOINT_HOOK):
            checkpoint = dict(checkpoint, type=AtomicCheckpointHook)
        hooks['checkpoint'] = checkpoint
        super().register_default_hooks(hooks)

    def save_checkpoint(self,
                        out_dir: str,
                        filename: str,
                        file_client_args: Optional[dict] = None,
                        save_optimizer: bool = True,
                        save_param_scheduler: bool = True,
                        meta: Optional[dict] = None,
                        by_epoch: bool = True,
                        backend_args: Optional[dict] = None) -> None:
        """Save a checkpoint with the random states of all ranks, atomically.

        Call it on every rank (the random states are gathered); rank 0
        writes the file. Local files are written as ``<filename>.tmp`` and
        renamed; other storage backends are written as by MMEngine.

        Args:
            out_dir (str): Folder of the checkpoint.
            filename (str): Checkpoint file name.
            file_client_args (dict, optional): Deprecated MMEngine file
                client arguments. Defaults to None.
            save_optimizer (bool): Save the optimizer. Defaults to True.
            save_param_scheduler (bool): Save the parameter schedulers.
                Defaults to True.
            meta (dict, optional): Meta information to save. Defaults to
                None.
            by_epoch (bool): Whether ``meta`` counts epochs. Defaults to
                True.
            backend_args (dict, optional): Storage backend arguments.
                Defaults to None.
        """
        if meta is not None and not isinstance(meta, dict):
            raise TypeError(f'ExactResumeRunner.save_checkpoint: meta must '
                            f'be a dict or None, but got {type(meta)}')
        meta = dict(meta or {})
        meta[RANDOM_STATES_KEY] = gather_random_states()
        if get_world_size() > 1:
            meta[RANK_NORM_BUFFERS_KEY] = all_gather_object(
                rank_norm_buffers(self._bare_model()))
        if not is_main_process():
            return
        save = super().save_checkpoint
        kwargs = dict(
            file_client_args=file_client_args,
            save_optimizer=save_optimizer,
            save_param_scheduler=save_param_scheduler,
            meta=meta,
            by_epoch=by_epoch,
            backend_args=backend_args)
        if file_client_args is not None or not isinstance(
                get_file_backend(out_dir, backend_args=backend_args),
                LocalBackend):
            save(out_dir, filename, **kwargs)
            return
        path = osp.join(out_dir, filename)
        tmp_path = path + TMP_SUFFIX
        try:
            save(out_dir, filename + TMP_SUFFIX, **kwargs)
            replace_atomically(tmp_path, path)
        finally:
            if osp.exists(tmp_path):
                os.remove(tmp_path)

    def load_checkpoint(self,
                        filename: str,
                        map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False,
                        revise_keys: Optional[list] = None) -> dict:
        """Load a checkpoint, then this rank's own norm statistics.

        Arguments and return value as MMEngine's ``Runner.load_checkpoint``
        (``revise_keys=None`` is its default, stripping ``module.``). A
        checkpoint of a multi-process run holds the running statistics of
        every rank (``meta.rank_norm_buffers``); with as many processes as
        it was saved with, each rank takes its own back, otherwise all keep
        those of rank 0 (the ``state_dict``).
        """
        checkpoint = super().load_checkpoint(
            filename,
            map_location=map_location,
            strict=strict,
            revise_keys=revise_keys or [(r'^module.', '')])
        per_rank: Optional[List[Dict[str, Tensor]]] = checkpoint.get(
            'meta', {}).get(RANK_NORM_BUFFERS_KEY)
        if per_rank is None:
            return checkpoint
        if len(per_rank) != get_world_size():
            print_log(
                f'ExactResumeRunner: {filename} holds the norm statistics of '
                f'{len(per_rank)} processes but this run has '
                f'{get_world_size()}: every rank uses those of rank 0.',
                logger='current',
                level=logging.INFO)
            return checkpoint
        load_rank_norm_buffers(self._bare_model(), per_rank[get_rank()])
        return checkpoint

    def _bare_model(self) -> nn.Module:
        """The model without its DDP wrapper."""
        return unwrap_model(self.model)
