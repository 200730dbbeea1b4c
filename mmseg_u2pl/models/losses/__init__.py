# Copyright (c) mmseg_u2pl contributors. All rights reserved.
from .contrastive_loss import UnreliableContrastiveLoss
from .memory_bank import CategoryMemoryBank

__all__ = ['UnreliableContrastiveLoss', 'CategoryMemoryBank']
