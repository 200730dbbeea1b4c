# Copyright (c) mmseg_u2pl contributors. All rights reserved.
from .checkpoint import (load_checkpoint_safely,
                         register_checkpoint_safe_globals)
from .cpu_memory import keep_freed_cpu_memory
from .launch import prepare_launch
from .misc import (WARMUP_ITERS_KEY, is_int, is_semi_iter, train_progress,
                   unwrap_model, warmup_iters)

__all__ = [
    'WARMUP_ITERS_KEY', 'is_int', 'is_semi_iter',
    'keep_freed_cpu_memory',
    'load_checkpoint_safely', 'prepare_launch',
    'register_checkpoint_safe_globals', 'train_progress', 'unwrap_model',
    'warmup_iters'
]
