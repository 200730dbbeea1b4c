# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Mixed-precision optimizer wrapper for machines without a GPU."""
from typing import Union

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmseg.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(AmpOptimWrapper):
    """Mixed-precision optimizer wrapper that also runs on CPU.

    MMEngine's ``AmpOptimWrapper`` refuses to be built without a GPU. This
    subclass builds its gradient scaler for the CPU device and defaults to
    ``bfloat16`` autocast, because ``float16`` autocast is poorly supported
    on CPU. ``tools/train.py --amp`` selects it when CUDA is unavailable.

    Example:
        >>> optim_wrapper = dict(
        ...     type='CPUAmpOptimWrapper', dtype='bfloat16',
        ...     loss_scale='dynamic',
        ...     optimizer=dict(type='SGD', lr=0.01, momentum=0.9))

    Args:
        loss_scale (float | str | dict): ``'dynamic'``, a static initial
            scale, or keyword arguments of :class:`torch.amp.GradScaler`.
            Defaults to ``'dynamic'``.
        dtype (str | torch.dtype): Autocast dtype. Defaults to
            ``'bfloat16'``.
        **kwargs: Passed to :class:`~mmengine.optim.OptimWrapper`.
    """

    def __init__(self,
                 loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Union[str, torch.dtype] = 'bfloat16',
                 **kwargs) -> None:
        # Skip AmpOptimWrapper.__init__: it asserts that a GPU is present.
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        if loss_scale == 'dynamic':
            self.loss_scaler = torch.amp.GradScaler('cpu')
        elif isinstance(loss_scale, float):
            self._scale_update_param = loss_scale
            self.loss_scaler = torch.amp.GradScaler(
                'cpu', init_scale=loss_scale)
        elif isinstance(loss_scale, dict):
            self.loss_scaler = torch.amp.GradScaler('cpu', **loss_scale)
        else:
            raise TypeError('CPUAmpOptimWrapper: loss_scale must be '
                            "'dynamic', a float or a dict, but got "
                            f'{loss_scale!r}')
        if isinstance(dtype, str):
            if dtype not in self.valid_dtypes:
                raise ValueError(f'CPUAmpOptimWrapper: dtype must be one of '
                                 f'{self.valid_dtypes}, but got {dtype!r}')
            dtype = getattr(torch, dtype)
        if not isinstance(dtype, torch.dtype):
            raise TypeError('CPUAmpOptimWrapper: dtype must be a str or '
                            f'torch.dtype, but got {dtype!r}')
        self.cast_dtype = dtype
