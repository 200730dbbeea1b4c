# Copyright (c) mmseg_u2pl contributors. All rights reserved.
from .hooks import *  # noqa: F401,F403
from .optimizers import CPUAmpOptimWrapper
from .runner import *  # noqa: F401,F403
from .wrappers import MeanTeacherDistributedDataParallel

__all__ = ['CPUAmpOptimWrapper', 'MeanTeacherDistributedDataParallel']
