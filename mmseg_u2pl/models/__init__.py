# Copyright (c) mmseg_u2pl contributors. All rights reserved.
from .data_preprocessor import SemiSegDataPreProcessor
from .heads import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .segmentors import *  # noqa: F401,F403

__all__ = ['SemiSegDataPreProcessor']
