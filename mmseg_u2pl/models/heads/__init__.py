# Copyright (c) mmseg_u2pl contributors. All rights reserved.
from .deeplabv3plus_head import DeepLabV3PlusHead
from .representation_head import (RepresentationHead,
                                  forward_with_classifier_input)

__all__ = [
    'DeepLabV3PlusHead', 'RepresentationHead', 'forward_with_classifier_input'
]
