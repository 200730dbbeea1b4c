# Copyright (c) mmseg_u2pl contributors. All rights reserved.
from .contrastive_loss import UnreliableContrastiveLoss
from .memory_bank import CategoryMemoryBank
from .ohem_cross_entropy_loss import OHEMCrossEntropyLoss

__all__ = [
    'UnreliableContrastiveLoss', 'CategoryMemoryBank', 'OHEMCrossEntropyLoss'
]
