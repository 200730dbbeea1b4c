# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Let a CPU training process reuse the memory it frees.

glibc serves every allocation above 32 MiB with a fresh ``mmap`` and gives
it back on ``free``, so each large temporary tensor of a CPU step (the
memory bank's gathers, logits upsampled to the crop, transposed feature
maps) is page-faulted in anew, 4 KiB at a time: at the paper's sizes that
was about half of the contrastive loss's CPU time
(``tools/analysis/benchmark_contrastive_loss.py``). With ``mmap`` off and
the heap never trimmed, freed blocks are reused instead. The process keeps
its peak resident memory until it exits, which is what a training process
does anyway.
"""
import ctypes
import ctypes.util
import sys

# mallopt parameters, <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def keep_freed_cpu_memory() -> bool:
    """Keep freed memory in this process for reuse (glibc ``mallopt``).

    Affects allocations from now on, in this process and in the processes
    it forks later (data-loader workers). Elsewhere than Linux with glibc it
    does nothing.

    Returns:
        bool: Whether the allocator was changed.
    """
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
