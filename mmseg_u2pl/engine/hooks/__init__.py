# Copyright (c) mmseg_u2pl contributors. All rights reserved.
from .mean_teacher_hook import MeanTeacherHook
from .pseudo_label_vis_hook import PseudoLabelVisualizationHook
from .random_state_hook import RandomStateHook

__all__ = [
    'MeanTeacherHook', 'PseudoLabelVisualizationHook', 'RandomStateHook'
]
