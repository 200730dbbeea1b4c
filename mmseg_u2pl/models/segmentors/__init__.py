# Copyright (c) mmseg_u2pl contributors. All rights reserved.
from .mean_teacher import MeanTeacherSegmentor
from .u2pl import U2PL

__all__ = ['MeanTeacherSegmentor', 'U2PL']
