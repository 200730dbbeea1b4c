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
import datetime
import logging
import os
import subprocess
import sys
from typing import Any, Optional, Tuple

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

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN')
DEFAULT_DIST_TIMEOUT = 1800


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


def dist_env_from_launcher(launcher: str) -> Tuple[int, int, int]:
    """Rank, world size and local rank of this process from the launcher.

    Also sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT`` so that ``init_method='env://'`` works.

    Args:
        launcher (str): ``'pytorch'`` (torchrun), ``'slurm'`` or ``'mpi'``.

    Returns:
        tuple[int, int, int]: ``(rank, world_size, local_rank)``.

    Raises:
        KeyError: If an environment variable of the launcher is missing.
    """
    env = os.environ
    required = dict(
        pytorch=('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                 'MASTER_PORT'),
        slurm=('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
        mpi=('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE',
             'OMPI_COMM_WORLD_LOCAL_RANK', 'MASTER_ADDR'))
    if launcher not in required:
        raise ValueError(f'--launcher must be one of {LAUNCHERS}, but got '
                         f'{launcher!r}')
    missing = [key for key in required[launcher] if key not in env]
    if missing:
        raise KeyError(
            f'--launcher {launcher}: environment variable(s) {missing} are '
            'not set. Start the job with tools/dist_train.sh (torchrun), '
            'tools/slurm_train.sh (srun) or mpirun, or use --launcher none '
            'for a single process.')
    if launcher == 'slurm':
        env['RANK'] = env['SLURM_PROCID']
        env['WORLD_SIZE'] = env['SLURM_NTASKS']
        env['LOCAL_RANK'] = env.get('SLURM_LOCALID', '0')
        env.setdefault('MASTER_PORT', '29500')
        if 'MASTER_ADDR' not in env:
            env['MASTER_ADDR'] = subprocess.getoutput(
                f'scontrol show hostname {env["SLURM_NODELIST"]} | head -n1')
    elif launcher == 'mpi':
        env['RANK'] = env['OMPI_COMM_WORLD_RANK']
        env['WORLD_SIZE'] = env['OMPI_COMM_WORLD_SIZE']
        env['LOCAL_RANK'] = env['OMPI_COMM_WORLD_LOCAL_RANK']
        env.setdefault('MASTER_PORT', '29500')
    return int(env['RANK']), int(env['WORLD_SIZE']), int(env['LOCAL_RANK'])


def init_cpu_dist(launcher: str,
                  timeout: Optional[float] = DEFAULT_DIST_TIMEOUT) -> None:
    """Create the ``gloo`` process group of a CPU multi-process run.

    Does nothing if a process group already exists.

    Args:
        launcher (str): ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
        timeout (float, optional): Seconds before collectives time out.
    """
    if torch_dist.is_initialized():
        return
    rank, world_size, _ = dist_env_from_launcher(launcher)
    kwargs = {}
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    torch_dist.init_process_group(
        backend='gloo',
        init_method='env://',
        rank=rank,
        world_size=world_size,
        **kwargs)


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
    CUDA, nothing else changes (MMEngine's NCCL path). Without CUDA: the process keeps the memory it frees for reuse
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
    'default_model_wrapper_cfg', 'dist_env_from_launcher', 'enable_amp', 'init_cpu_dist', 'prepare_launch'
]


def shutdown_dist() -> bool:
    """Tear the process group down before the interpreter exits.

    Returns True if there was one (a distributed run).

    Without it, gloo's background threads can outlive Python's shutdown and
    abort the process ("terminate called without an active exception")
    after a successful run.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
        return True
    return False


def exit_without_teardown(code: int = 0) -> None:
    """Flush the logs and end the process without C++ static teardown.

    Even after :func:`shutdown_dist`, a finished multi-process (gloo) run
    still aborted now and then at interpreter exit ("terminate called
    without an active exception", exit code -6) on a loaded machine: a
    native thread of the distributed stack outlives Python's shutdown. The
    work is complete and every file is closed by then, so the tools end a
    successful distributed run here instead, after flushing the logging
    handlers and the standard streams.

    Args:
        code (int): Exit status. Defaults to 0.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
