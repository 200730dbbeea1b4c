# Copyright (c) mmseg_u2pl contributors. All rights reserved.
from .checkpoint import (load_checkpoint_safely,
                         register_checkpoint_safe_globals)
from .cpu_memory import keep_freed_cpu_memory
from .launch import CPUAmpOptimWrapper, prepare_launch

__all__ = [
    'CPUAmpOptimWrapper', 'keep_freed_cpu_memory', 'load_checkpoint_safely',
    'prepare_launch',
    'register_checkpoint_safe_globals'
]
