# Copyright (c) mmseg_u2pl contributors. All rights reserved.
from .sample_checks import check_label_values
from .semi_dataset import SemiDataset
from .toy_dataset import ToyShapes21Dataset, ToyShapesDataset
from .validation import check_dataset_files

__all__ = [
    'SemiDataset', 'ToyShapesDataset', 'ToyShapes21Dataset',
    'check_dataset_files', 'check_label_values'
]
