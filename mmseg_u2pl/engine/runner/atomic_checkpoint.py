# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Atomic checkpoint files and ``last_checkpoint`` pointer.

MMEngine writes a checkpoint with ``open(path, 'wb')`` and the
``last_checkpoint`` pointer with ``open(path, 'w')``, both in place, and its
``CheckpointHook`` deletes the oldest checkpoint (``max_keep_ckpts``)
*before* it saves the new one. A process killed at the wrong moment then
leaves a truncated checkpoint, an empty pointer, or a pointer to a deleted
file (with ``max_keep_ckpts=1``: no checkpoint at all).

Here every file is written to a temporary file in the same folder, flushed
to disk and renamed over the target with :func:`os.replace`, which is atomic
on POSIX and Windows: the target is either the old or the new complete file.
:class:`AtomicCheckpointHook` saves the new checkpoint, then moves the
pointer, then deletes outdated checkpoints.
"""
import os
import os.path as osp
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmseg.registry import HOOKS

TMP_SUFFIX = '.tmp'
LAST_CHECKPOINT = 'last_checkpoint'


def _fsync_dir(folder: str) -> None:
    """Flush a folder's entries (the rename) to disk where supported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_atomically(tmp_path: str, path: str) -> None:
    """Flush ``tmp_path`` to disk and rename it to ``path`` atomically.

    Args:
        tmp_path (str): A complete file in the folder of ``path``.
        path (str): The target; replaced if it exists.
    """
    with open(tmp_path, 'rb+') as f:
        os.fsync(f.fileno())
    os.replace(tmp_path, path)
    _fsync_dir(osp.dirname(osp.abspath(path)))


def write_text_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file + rename).

    Args:
        path (str): The file to (over)write.
        text (str): Its new content.
    """
    tmp_path = path + TMP_SUFFIX
    try:
        with open(tmp_path, 'w') as f:
            f.write(text)
        replace_atomically(tmp_path, path)
    finally:
        if osp.exists(tmp_path):
            os.remove(tmp_path)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` that never points ``last_checkpoint`` at a bad file.

    Same arguments and files as MMEngine's ``CheckpointHook``; only the order
    of one save differs:

    1. save the new checkpoint (atomically under
       :class:`~mmseg_u2pl.engine.runner.ExactResumeRunner`);
    2. replace ``work_dir/last_checkpoint`` atomically;
    3. delete the checkpoints beyond ``max_keep_ckpts``.

    A process killed at any point leaves ``last_checkpoint`` naming a
    complete checkpoint. Between steps 1 and 3 one more checkpoint than
    ``max_keep_ckpts`` is on disk.

    ``ExactResumeRunner`` uses it in place of ``CheckpointHook``; a config
    may also name it directly.

    Example:
        >>> default_hooks = dict(checkpoint=dict(
        ...     type='AtomicCheckpointHook', by_epoch=False, interval=4000,
        ...     max_keep_ckpts=2))
    """

    def _save_checkpoint_with_step(self, runner, step: int,
                                   meta: dict) -> None:
        """Save, move the pointer, then delete outdated checkpoints.

        Args:
            runner (Runner): The runner.
            step (int): Epoch or iteration number of the checkpoint.
            meta (dict): Meta information saved with it.
        """
        kept = list(getattr(self, 'keep_ckpt_ids', []))
        last_ckpt = self.last_ckpt
        outdated = self._keep_step(runner, step)
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        try:
            runner.save_checkpoint(
                self.out_dir,
                ckpt_filename,
                self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=self.by_epoch,
                backend_args=self.backend_args,
                **self.args)
        except BaseException:
            self._undo_keep_step(runner, kept, last_ckpt)
            raise
        if not is_main_process():
            return
        write_text_atomically(
            osp.join(runner.work_dir, LAST_CHECKPOINT), self.last_ckpt)
        if outdated is not None:
            self._remove_checkpoint(outdated)

    def _keep_step(self, runner, step: int) -> Optional[int]:
        """Record ``step`` among the kept checkpoints (``max_keep_ckpts``).

        The list goes to the message hub before saving, so the checkpoint
        holds it, as with ``CheckpointHook``.

        Returns:
            int, optional: The step whose checkpoint is now outdated.
        """
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids
                                        and self.keep_ckpt_ids[-1] == step):
            return None
        outdated = None
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            outdated = self.keep_ckpt_ids.popleft()
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids',
                                       list(self.keep_ckpt_ids))
        return outdated

    def _undo_keep_step(self, runner, kept: list,
                        last_ckpt: Optional[str]) -> None:
        """Forget a checkpoint whose save failed (e.g. disk full).

        Args:
            runner (Runner): The runner.
            kept (list[int]): The kept steps before the save.
            last_ckpt (str, optional): The latest checkpoint before it.
        """
        if self.max_keep_ckpts > 0:
            self.keep_ckpt_ids.clear()
            self.keep_ckpt_ids.extend(kept)
            runner.message_hub.update_info('keep_ckpt_ids', kept)
        self.last_ckpt = last_ckpt
        if last_ckpt is not None:
            runner.message_hub.update_info('last_ckpt', last_ckpt)

    def _remove_checkpoint(self, step: int) -> None:
        """Delete the checkpoint (file or folder) of ``step``."""
        path = self.file_backend.join_path(self.out_dir,
                                           self.filename_tmpl.format(step))
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # e.g. saved by DeepSpeed
            self.file_backend.rmtree(path)
