# Copyright (c) mmseg_u2pl contributors. All rights reserved.
from .semi_dataset import SemiDataset
from .toy_dataset import ToyShapes21Dataset, ToyShapesDataset
from .validation import check_dataset_files, check_label_values

__all__ = [
    'SemiDataset', 'ToyShapesDataset', 'ToyShapes21Dataset',
    'check_dataset_files', 'check_label_values'
]
