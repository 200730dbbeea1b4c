# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""DDP wrapper that leaves the training step to the mean-teacher model."""
from typing import Dict

from mmengine.model.wrappers import MMDistributedDataParallel
from mmengine.optim import OptimWrapper
from mmengine.registry import MODEL_WRAPPERS
from torch import Tensor


# mmengine's registry: its Runner looks wrappers up there (a child
# registry's names would need a scope prefix)
@MODEL_WRAPPERS.register_module()
class MeanTeacherDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` whose ``train_step`` is the model's.

    A :class:`~mmseg_u2pl.models.MeanTeacherSegmentor` owns its training
    step (the non-finite guard decides how the optimizer update is applied);
    this wrapper runs it with the forward going through DDP, so that the
    gradients are synchronised. ``tools/train.py`` selects it for
    mean-teacher models when the config sets no ``model_wrapper_cfg``.

    Args:
        module (nn.Module): The model.
        broadcast_buffers (bool): Defaults to False, as mmengine's Runner
            builds DDP by default.
        **kwargs: Passed to ``MMDistributedDataParallel``.
    """

    def __init__(self, module, broadcast_buffers: bool = False, **kwargs):
        super().__init__(
            module=module, broadcast_buffers=broadcast_buffers, **kwargs)

    def train_step(self, data: dict,
                   optim_wrapper: OptimWrapper) -> Dict[str, Tensor]:
        return self.module.train_step(data, optim_wrapper, wrapper=self)
