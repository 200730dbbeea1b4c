# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Process groups of CPU runs: launcher environment, gloo, clean exit."""
import datetime
import logging
import os
import subprocess
import sys
from typing import Optional, Tuple

import torch.distributed as torch_dist

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
DEFAULT_DIST_TIMEOUT = 1800


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
