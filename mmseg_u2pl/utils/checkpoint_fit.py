# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Check that a checkpoint fits the model before it is loaded.

MMEngine loads ``load_from`` (and resumes) with ``strict=False``: the
weights of a checkpoint saved from another architecture or class count are
skipped with a warning, and training goes on from random weights.
:func:`check_checkpoint_fits` compares a checkpoint with the model before
that happens and raises :class:`CheckpointMismatchError`, naming the first
mismatching keys and the setting that allows a partial load
(:data:`ALLOW_MISMATCH_KEY`).
"""
import logging
import re
from collections import OrderedDict
from typing import Any, Dict, List, NamedTuple, Tuple

from mmengine.logging import print_log
from torch import nn

from .checkpoint import (load_checkpoint_safely, refuse_unsafe_checkpoints,
                         register_checkpoint_safe_globals)
from .misc import unwrap_model

#: Config key that lets a checkpoint which does not fit the model load
#: partially (mmengine's behaviour: matching weights only).
ALLOW_MISMATCH_KEY = 'allow_checkpoint_mismatch'
# How many keys of each kind a mismatch message lists.
MAX_SHOWN_KEYS = 5


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model it is about to be loaded into."""


class CheckpointDiff(NamedTuple):
    """How a checkpoint's weights differ from a model's state.

    Attributes:
        unexpected (list[str]): Keys of the file the model has no place for.
        shape_mismatch (list[tuple[str, tuple, tuple]]): ``(key, shape in the
            file, shape in the model)``.
        missing (list[str]): Keys of the model the file lacks, inside parts
            of the model the file does fill (e.g. a ResNet block).
        absent_components (list[str]): Whole components of a segmentor
            (children of a ``BaseSegmentor``, e.g. ``contrastive_loss``,
            ``student.representation_head``) the file has no weight for;
            they keep their initialisation.
        num_matched (int): Weights of the model found in the file with the
            right shape.
    """
    unexpected: List[str]
    shape_mismatch: List[Tuple[str, tuple, tuple]]
    missing: List[str]
    absent_components: List[str]
    num_matched: int

    @property
    def fits(self) -> bool:
        """Nothing but whole components is missing, and something loads."""
        return self.num_matched > 0 and not (
            self.unexpected or self.shape_mismatch or self.missing)


def checkpoint_state_dict(checkpoint: dict) -> Dict[str, Any]:
    """The weights of a checkpoint as mmengine's loader reads them.

    ``checkpoint['state_dict']`` if present, else the dict itself, with the
    ``module.`` prefix of DDP-wrapped models removed (mmengine's default
    ``revise_keys``).
    """
    state_dict = checkpoint.get('state_dict', checkpoint)
    revised = OrderedDict((re.sub(r'^module\.', '', key), value)
                          for key, value in state_dict.items())
    revised._metadata = getattr(state_dict, '_metadata', OrderedDict())
    return revised


def _as_the_model_reads_it(model: nn.Module,
                           state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """``state_dict`` after the model's load pre-hooks rewrote its keys.

    Walks the modules as :meth:`torch.nn.Module.load_state_dict` does: each
    module's pre-hooks (e.g. ``MeanTeacherSegmentor`` filling student and
    teacher from a plain mmseg checkpoint) see the keys under its prefix,
    and may rename them, before its children are visited. Nothing is loaded.
    """
    metadata = getattr(state_dict, '_metadata', None) or {}

    def visit(module: nn.Module, local: Dict[str, Any],
              prefix: str) -> Dict[str, Any]:
        for hook in module._load_state_dict_pre_hooks.values():
            hook(local, prefix, metadata.get(prefix[:-1], {}), True, [], [],
                 [])
        children = [(prefix + name + '.', child)
                    for name, child in module._modules.items()
                    if child is not None]
        result = {
            key: value
            for key, value in local.items()
            if not any(key.startswith(p) for p, _ in children)
        }
        for child_prefix, child in children:
            result.update(
                visit(
                    child, {
                        key: value
                        for key, value in local.items()
                        if key.startswith(child_prefix)
                    }, child_prefix))
        return result

    return visit(model, dict(state_dict), '')


def compare_checkpoint(model: nn.Module,
                       state_dict: Dict[str, Any]) -> CheckpointDiff:
    """Compare a checkpoint's weights with a model, loading nothing.

    Keys are matched after the model's load pre-hooks, so a plain mmseg
    checkpoint matches both networks of a mean-teacher model. BatchNorm's
    ``num_batches_tracked`` is ignored when missing, as mmengine does.

    Args:
        model (nn.Module): The model (wrappers are removed).
        state_dict (dict): Weights, e.g. from :func:`checkpoint_state_dict`.

    Returns:
        CheckpointDiff: What does not match.
    """
    from mmseg.models.segmentors import BaseSegmentor
    model = unwrap_model(model)
    loaded = _as_the_model_reads_it(model, state_dict)
    own = model.state_dict()
    unexpected = [key for key in loaded if key not in own]
    shape_mismatch = []
    for key, value in own.items():
        if key in loaded:
            shape = tuple(getattr(loaded[key], 'shape', ('not a tensor', )))
            if shape != tuple(value.shape):
                shape_mismatch.append((key, shape, tuple(value.shape)))
    filled = set()  # module paths the file has weights under
    for key in loaded:
        parts = key.split('.')
        filled.update('.'.join(parts[:i]) for i in range(1, len(parts)))
    modules = dict(model.named_modules())
    missing, absent = [], []
    for key in own:
        if key in loaded or key.endswith('num_batches_tracked'):
            continue
        parts = key.split('.')
        # the largest module above the key the file has no weight under
        depth = next((i for i in range(1, len(parts))
                      if '.'.join(parts[:i]) not in filled), None)
        component = '.'.join(parts[:depth]) if depth else None
        parent = modules.get('.'.join(parts[:depth - 1])) if depth else None
        if component in modules and isinstance(parent, BaseSegmentor):
            if component not in absent:
                absent.append(component)
        else:
            missing.append(key)
    num_matched = sum(key in loaded for key in own) - len(shape_mismatch)
    return CheckpointDiff(unexpected, shape_mismatch, missing, absent,
                          num_matched)


def _shown(items: List[str], sep: str = ', ') -> str:
    """The first :data:`MAX_SHOWN_KEYS` items and how many more there are."""
    more = len(items) - MAX_SHOWN_KEYS
    tail = f'{sep}... ({more} more)' if more > 0 else ''
    return sep.join(items[:MAX_SHOWN_KEYS]) + tail


def explain_checkpoint_mismatch(diff: CheckpointDiff,
                                path: str,
                                model_name: str,
                                from_mean_teacher: bool = False) -> str:
    """The message of :class:`CheckpointMismatchError` for ``diff``.

    Args:
        diff (CheckpointDiff): The comparison.
        path (str): The checkpoint file.
        model_name (str): Class name of the model.
        from_mean_teacher (bool): The file holds ``student.*`` /
            ``teacher.*`` weights and the model is not a mean teacher: the
            message points to the export tool. Defaults to False.
    """
    lines = [
        f'Checkpoint {path!r} does not fit the model ({model_name}): it was '
        'probably saved from another architecture or number of classes.'
    ]
    if diff.unexpected:
        lines.append(f'  {len(diff.unexpected)} weight(s) of the file have '
                     f'no place in the model: {_shown(diff.unexpected)}')
    if diff.shape_mismatch:
        shapes = [
            f'{key} {file_shape} in the file, {model_shape} in the model'
            for key, file_shape, model_shape in diff.shape_mismatch
        ]
        lines.append(f'  {len(shapes)} weight(s) have another shape: '
                     f'{_shown(shapes, "; ")}')
    if diff.missing:
        lines.append(f'  {len(diff.missing)} weight(s) of the model are '
                     f'missing from the file: {_shown(diff.missing)}')
    if diff.num_matched == 0:
        lines.append('  Not one weight of the model is in the file.')
    if from_mean_teacher:
        lines.append('  The file holds a mean-teacher (U2PL) checkpoint: '
                     'for a plain mmseg model, export one network with '
                     'tools/model_converters/export_checkpoint.py.')
    lines.append(
        'MMEngine would skip these weights with a warning and train or test '
        'from random ones. Use a checkpoint of this config, or, to load only '
        f'the matching weights (fine-tuning), set `{ALLOW_MISMATCH_KEY}='
        f'True` in the config (--cfg-options {ALLOW_MISMATCH_KEY}=True).')
    return '\n'.join(lines)


def check_checkpoint_fits(model: nn.Module, checkpoint: dict,
                          path: str) -> CheckpointDiff:
    """Raise unless ``checkpoint`` fits ``model``.

    Fits: every weight of the file has a place of the same shape in the
    model, and every weight of the model is in the file except whole
    components of a segmentor the file knows nothing of (a plain mmseg
    checkpoint has no ``representation_head`` or ``contrastive_loss``; a
    supervised one no auxiliary head). Those keep their initialisation and
    are named in a warning.

    Args:
        model (nn.Module): The model about to load the checkpoint.
        checkpoint (dict): The loaded checkpoint.
        path (str): Its file, named in the messages.

    Returns:
        CheckpointDiff: The comparison (it fits).

    Raises:
        CheckpointMismatchError: It does not fit; names the first
            mismatching keys and :data:`ALLOW_MISMATCH_KEY`.
    """
    model = unwrap_model(model)
    state_dict = checkpoint_state_dict(checkpoint)
    diff = compare_checkpoint(model, state_dict)
    if not diff.fits:
        from_mean_teacher = not hasattr(model, 'student') and any(
            key.startswith(('student.', 'teacher.')) for key in state_dict)
        raise CheckpointMismatchError(
            explain_checkpoint_mismatch(diff, path,
                                        type(model).__name__,
                                        from_mean_teacher))
    if diff.absent_components:
        print_log(
            f'Checkpoint {path!r} has no weights for '
            f'{", ".join(diff.absent_components)}: they keep their '
            'initialisation.',
            logger='current',
            level=logging.WARNING)
    return diff


def check_checkpoint_file(model: nn.Module, path: str) -> CheckpointDiff:
    """Load a checkpoint file (local or remote) and check that it fits.

    Args:
        model (nn.Module): The model about to load the checkpoint.
        path (str): Local file or URL (``https://``, ``open-mmlab://``...).

    Returns:
        CheckpointDiff: The comparison (it fits).

    Raises:
        FileNotFoundError: A local ``path`` does not exist.
        UnsafeCheckpointError: The file holds objects outside the allow-list.
        CheckpointMismatchError: It does not fit the model.
    """
    if '://' in path:
        from mmengine.runner.checkpoint import CheckpointLoader
        register_checkpoint_safe_globals()
        with refuse_unsafe_checkpoints(path):
            checkpoint = CheckpointLoader.load_checkpoint(
                path, map_location='cpu')
    else:
        checkpoint = load_checkpoint_safely(path)
    return check_checkpoint_fits(model, checkpoint, path)
