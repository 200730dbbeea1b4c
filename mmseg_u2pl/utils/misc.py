# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Small helpers shared by the models, the hooks and the loops."""
from typing import Optional, Tuple

from mmengine.logging import MessageHub
from mmengine.model import BaseTTAModel, is_model_wrapper
from torch import nn

#: runtime-info key of the supervised warm-up length ``t_w`` (iterations),
#: published by ``MeanTeacherHook`` before training
WARMUP_ITERS_KEY = 'semi_warmup_iters'


def is_int(value) -> bool:
    """A Python ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside mmengine's wrappers (DDP, ``BaseTTAModel``)."""
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def train_progress(
        required: bool = False) -> Tuple[Optional[int], Optional[int]]:
    """``(iter, max_iters)`` of the running train loop, None outside one.

    ``iter`` is the 0-based index of the iteration being run, as mmengine's
    ``RuntimeInfoHook`` records it in the current ``MessageHub``. With
    ``required``, an unknown progress raises a ``RuntimeError``.
    """
    hub = MessageHub.get_current_instance()
    cur_iter, max_iters = hub.get_info('iter'), hub.get_info('max_iters')
    if required and (cur_iter is None or not max_iters):
        raise RuntimeError(
            'The training progress (iter / max_iters) is unknown; train '
            'with an mmengine Runner (its RuntimeInfoHook records it).')
    return (None if cur_iter is None else int(cur_iter),
            None if max_iters is None else int(max_iters))


def warmup_iters() -> Optional[int]:
    """The warm-up length ``t_w`` the running ``MeanTeacherHook`` set."""
    value = MessageHub.get_current_instance().get_info(WARMUP_ITERS_KEY)
    return None if value is None else int(value)


def is_semi_iter(cur_iter: int, t_w: int) -> bool:
    """Whether iteration ``cur_iter`` (0-based) is past the warm-up ``t_w``.

    The one definition of the warm-up: iterations ``0 .. t_w - 1`` are
    supervised only, the semi-supervised losses start at ``t_w``.
    """
    return cur_iter >= t_w
