# Copyright (c) mmseg_u2pl contributors. All rights reserved.
from .checkpoint import (load_checkpoint_safely,
                         register_checkpoint_safe_globals)

__all__ = ['load_checkpoint_safely', 'register_checkpoint_safe_globals']
