# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Launch helpers shared by ``tools/train.py`` and ``tools/test.py``.

They adapt a config to the machine before the Runner is built:

* without CUDA, multi-process runs use the ``gloo`` backend: the process
  group is created here (MMEngine's ``init_dist`` calls
  ``torch.cuda.set_device``) and the DDP wrapper gets no ``device_ids``;
* without CUDA, ``SyncBN`` norm layers become ``BN``;
* ``--amp`` switches the optimizer wrapper to mixed precision; without
  CUDA, ``AmpOptimWrapper`` becomes ``CPUAmpOptimWrapper`` (``bfloat16``).

With CUDA present, MMEngine's normal NCCL path is left alone.
"""
import logging
from typing import Any, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, ConfigDict
from mmengine.dist import get_rank
from mmengine.logging import print_log
from mmengine.model.wrappers import MMDistributedDataParallel
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmseg.registry import MODEL_WRAPPERS, MODELS, OPTIM_WRAPPERS
from torch.nn.parallel import DistributedDataParallel

from .cpu_memory import keep_freed_cpu_memory
from .dist_utils import DEFAULT_DIST_TIMEOUT, LAUNCHERS, init_cpu_dist

SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN')


def _log(msg: str, level: int = logging.INFO) -> None:
    """Log once per job: only the process of rank 0 prints."""
    if get_rank() == 0:  # 0 until the process group exists: call after it
        print_log(msg, logger='current', level=level)


def _wrapper_class(type_: Any, registry) -> Optional[type]:
    """Resolve a config ``type`` (name or class) in ``registry``."""
    if isinstance(type_, type):
        return type_
    return registry.get(type_) if isinstance(type_, str) else None


def enable_amp(cfg: Config, config_path: str = '<config>') -> None:
    """Switch ``cfg.optim_wrapper`` to automatic mixed precision.

    Sets ``type='AmpOptimWrapper', loss_scale='dynamic'`` as mmseg's
    ``--amp`` does. Call it before :func:`prepare_launch`, which moves the
    wrapper to ``CPUAmpOptimWrapper`` with ``bfloat16`` when CUDA is
    unavailable.

    Args:
        cfg (Config): The full config; modified in place.
        config_path (str): Config file, named in errors.

    Raises:
        ValueError: If the config has no ``optim_wrapper``, if it already
            uses mixed precision, or if it is not a plain ``OptimWrapper``.
    """
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper is None:
        raise ValueError(f'--amp: {config_path} has no `optim_wrapper`; add '
                         "optim_wrapper=dict(type='OptimWrapper', "
                         'optimizer=...) to train with AMP.')
    wrapper_type = optim_wrapper.get('type', 'OptimWrapper')
    wrapper_cls = _wrapper_class(wrapper_type, OPTIM_WRAPPERS)
    if wrapper_cls is not None and issubclass(wrapper_cls, AmpOptimWrapper):
        raise ValueError(
            f'--amp: {config_path} already uses mixed precision '
            f'(optim_wrapper.type={wrapper_type!r}); drop --amp or set '
            "optim_wrapper.type='OptimWrapper'.")
    if wrapper_cls is not OptimWrapper:
        raise ValueError(
            f'--amp only supports optim_wrapper.type=\'OptimWrapper\', but '
            f'{config_path} has optim_wrapper.type={wrapper_type!r}; '
            'configure mixed precision in that wrapper yourself.')
    optim_wrapper.type = 'AmpOptimWrapper'
    optim_wrapper.loss_scale = 'dynamic'


def _use_cpu_amp(cfg: Config) -> None:
    """Without CUDA, move ``AmpOptimWrapper`` to ``CPUAmpOptimWrapper``."""
    optim_wrapper = cfg.get('optim_wrapper')
    if not isinstance(optim_wrapper, dict):
        return
    if optim_wrapper.get('type') not in ('AmpOptimWrapper', AmpOptimWrapper):
        return
    optim_wrapper.type = 'CPUAmpOptimWrapper'
    if optim_wrapper.get('dtype') in (None, 'float16', torch.float16):
        optim_wrapper.dtype = 'bfloat16'
    optim_wrapper.pop('use_fsdp', None)
    _log('CUDA is not available: mixed precision uses CPUAmpOptimWrapper '
         f'with {optim_wrapper.dtype} autocast on CPU (AmpOptimWrapper needs '
         'a GPU, and float16 autocast is poorly supported on CPU).')


def convert_sync_bn(node: Any) -> int:
    """Replace every ``SyncBN`` norm type in a (nested) config by ``BN``.

    ``SyncBN`` (and mmcv's ``MMSyncBN``) need GPUs. Dicts and lists are
    walked recursively and changed in place; ``type`` values given as the
    ``nn.SyncBatchNorm`` class are replaced too.

    Args:
        node (Any): A config node, e.g. ``cfg.model``.

    Returns:
        int: How many norm configs were changed.
    """
    changed = 0
    if isinstance(node, dict):
        type_ = node.get('type')
        if (isinstance(type_, str) and type_.split('.')[-1]
                in SYNC_BN_TYPES) or type_ is torch.nn.SyncBatchNorm:
            node['type'] = 'BN'
            changed += 1
        for value in node.values():
            changed += convert_sync_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            changed += convert_sync_bn(value)
    return changed


def _revert_sync_bn(cfg: Config) -> None:
    """Without CUDA, turn SyncBN into BN in the model and drop ``sync_bn``."""
    changed = sum(
        convert_sync_bn(cfg.get(key)) for key in ('model', 'tta_model'))
    if cfg.get('sync_bn') is not None:
        cfg.sync_bn = None
        changed += 1
    if changed:
        _log(
            'CUDA is not available: SyncBN needs GPUs, so every SyncBN in '
            f'the config ({changed} norm configs) was replaced by BN; batch '
            'statistics are not synchronised across processes.',
            logging.WARNING)


def cpu_model_wrapper_cfg(cfg: Config) -> ConfigDict:
    """The DDP wrapper config for CPU processes (no ``device_ids``).

    A user-given ``model_wrapper_cfg`` is kept; only ``device_ids`` is
    removed. For DDP subclasses ``device_ids=None`` is set explicitly,
    because MMEngine's ``Runner.wrap_model`` otherwise fills in
    ``[LOCAL_RANK]``, which CPU modules refuse.

    Args:
        cfg (Config): The full config.

    Returns:
        ConfigDict: The wrapper config to assign to
        ``cfg.model_wrapper_cfg``.
    """
    wrapper_cfg = cfg.get('model_wrapper_cfg')
    if wrapper_cfg is None:
        wrapper_cfg = default_model_wrapper_cfg(cfg)
    else:
        wrapper_cfg = ConfigDict(wrapper_cfg)
        wrapper_cfg.setdefault('type', MMDistributedDataParallel.__name__)
    wrapper_cfg.pop('device_ids', None)
    wrapper_cls = _wrapper_class(wrapper_cfg.type, MODEL_WRAPPERS)
    if wrapper_cls is None:
        raise KeyError(f'model_wrapper_cfg.type={wrapper_cfg.type!r} is not '
                       'a registered model wrapper; check its spelling or '
                       'import the module that registers it.')
    if issubclass(wrapper_cls, DistributedDataParallel):
        wrapper_cfg.device_ids = None
    return wrapper_cfg


def default_model_wrapper_cfg(cfg: Config) -> ConfigDict:
    """The DDP wrapper config of mmengine's Runner when none is given.

    Mean-teacher models get ``MeanTeacherDistributedDataParallel``: their
    training step is their own (``MeanTeacherSegmentor.train_step``), which
    mmengine's default wrapper would bypass.

    Args:
        cfg (Config): The full config.

    Returns:
        ConfigDict: The wrapper config.
    """
    from mmseg_u2pl.models.segmentors import MeanTeacherSegmentor
    model_cls = _wrapper_class(cfg.get('model', {}).get('type'), MODELS)
    mean_teacher = model_cls is not None and issubclass(
        model_cls, MeanTeacherSegmentor)
    return ConfigDict(
        type='MeanTeacherDistributedDataParallel'
        if mean_teacher else MMDistributedDataParallel.__name__,
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))


def prepare_launch(cfg: Config, launcher: str = 'none') -> None:
    """Adapt ``cfg`` to this machine before ``Runner.from_cfg(cfg)``.

    Sets ``cfg.launcher``; a distributed mean-teacher model without a
    ``model_wrapper_cfg`` gets ``MeanTeacherDistributedDataParallel``. With
    CUDA, nothing else changes (MMEngine's NCCL path). Without CUDA: the
    process keeps the memory it frees for reuse
    (:func:`keep_freed_cpu_memory`; ``env_cfg.keep_freed_cpu_memory=False``
    turns it off), SyncBN becomes BN, a configured ``AmpOptimWrapper``
    becomes ``CPUAmpOptimWrapper``, and for ``launcher != 'none'`` the gloo
    process group is created (the Runner then skips ``init_dist``),
    ``env_cfg.dist_cfg.backend`` is set to ``'gloo'`` and the DDP wrapper
    gets no ``device_ids``.

    Args:
        cfg (Config): The full config; modified in place.
        launcher (str): One of ``'none'``, ``'pytorch'``, ``'slurm'``,
            ``'mpi'``. Defaults to ``'none'``.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f'--launcher must be one of {LAUNCHERS}, but got '
                         f'{launcher!r}')
    cfg.launcher = launcher
    if torch.cuda.is_available():
        if launcher != 'none' and cfg.get('model_wrapper_cfg') is None:
            cfg.model_wrapper_cfg = default_model_wrapper_cfg(cfg)
        return
    if cfg.get('env_cfg', {}).get('keep_freed_cpu_memory', True):
        keep_freed_cpu_memory()
    if launcher != 'none':
        env_cfg = cfg.setdefault('env_cfg', ConfigDict())
        dist_cfg = env_cfg.setdefault('dist_cfg', ConfigDict())
        dist_cfg.backend = 'gloo'
        init_cpu_dist(launcher, dist_cfg.get('timeout', DEFAULT_DIST_TIMEOUT))
        cfg.model_wrapper_cfg = cpu_model_wrapper_cfg(cfg)
        _log(f'CUDA is not available: running {torch_dist.get_world_size()} '
             'CPU processes with the gloo backend.')
    _revert_sync_bn(cfg)
    _use_cpu_amp(cfg)


__all__ = [
    'convert_sync_bn', 'cpu_model_wrapper_cfg',
    'default_model_wrapper_cfg', 'enable_amp', 'prepare_launch'
]
