# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Check that a model's decode heads predict the dataset's classes."""
from typing import Sequence

from torch import nn

from .misc import unwrap_model


def _head_config_key(module_name: str) -> str:
    """Config key of a decode head, e.g. ``model.segmentor.decode_head``.

    A mean-teacher model's ``student`` / ``teacher`` are both built from
    ``model.segmentor``. List items keep their index
    (``model.auxiliary_head.0``), as ``--cfg-options`` writes them.
    """
    parts = module_name.split('.')
    if len(parts) > 1 and parts[0] in ('student', 'teacher'):
        parts[0] = 'segmentor'
    return '.'.join(['model'] + parts)


def check_num_classes(model: nn.Module, classes: Sequence[str],
                      dataset_key: str) -> None:
    """Check that every decode head predicts the dataset's classes.

    A decode head with fewer classes than the dataset fails late, inside the
    loss, on the first label it cannot index; one with more trains silently
    and reports metrics over the wrong classes. Call this before training
    (or testing) with the dataset the model is run on.

    Args:
        model (nn.Module): The model, optionally in a model wrapper (DDP,
            TTA). Every mmseg ``BaseDecodeHead`` in it is checked (decode
            and auxiliary heads, of student and teacher).
        classes (Sequence[str]): The dataset's ``metainfo['classes']``;
            nothing is checked when empty.
        dataset_key (str): Config key of the dataset, named in the message,
            e.g. ``'train_dataloader.dataset'``.

    Raises:
        ValueError: A head's ``num_classes`` differs from ``len(classes)``;
            names its config key, both numbers and the class list.
    """
    from mmseg.models.decode_heads.decode_head import BaseDecodeHead
    if not classes:
        return
    num = len(classes)
    for name, module in unwrap_model(model).named_modules():
        if isinstance(module, BaseDecodeHead) and module.num_classes != num:
            key = _head_config_key(name)
            shown = tuple(classes) if num <= 30 else (
                f'{tuple(classes[:30])} ...')
            raise ValueError(
                f'{key}.num_classes = {module.num_classes}, but the dataset '
                f'({dataset_key}) has {num} classes: {shown}. Set '
                f'`{key}.num_classes={num}` (e.g. --cfg-options '
                f'{key}.num_classes={num}; every decode and auxiliary head '
                'must match), or give the dataset the class list the model '
                f'was made for with `{dataset_key}.metainfo=dict(classes='
                '...)`.')
