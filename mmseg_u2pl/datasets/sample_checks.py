# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Checks of one sample as it is loaded: label values and failing files.

A label map with values outside ``[0, num_classes) ∪ {ignore_index}``
(:func:`check_label_values`), or any other failure to load a sample
(:func:`naming_sample_files`), is reported naming the sample's files.
"""
from contextlib import contextmanager
from typing import Iterator, List, Tuple, Union

import numpy as np
import torch


def _invalid_values(label: Union[np.ndarray, torch.Tensor], num_classes: int,
                    ignore_index: int) -> Tuple[List, int]:
    """Distinct invalid values (sorted) and the number of invalid pixels."""
    if isinstance(label, torch.Tensor):
        valid = ((label >= 0) & (label < num_classes)) | (
            label == ignore_index)
        if label.is_floating_point():
            valid &= label == torch.floor(label)
        if bool(valid.all()):
            return [], 0
        bad = label[~valid]
        return torch.unique(bad).tolist(), int(bad.numel())
    label = np.asarray(label)
    if label.dtype == bool or not np.issubdtype(label.dtype, np.number):
        raise TypeError(f'a label map must hold numbers, got dtype '
                        f'{label.dtype}')
    valid = ((label >= 0) & (label < num_classes)) | (label == ignore_index)
    if np.issubdtype(label.dtype, np.floating):
        valid &= label == np.floor(label)
    if valid.all():
        return [], 0
    bad = label[~valid]
    return np.unique(bad).tolist(), int(bad.size)


def check_label_values(label: Union[np.ndarray,
                                    torch.Tensor], num_classes: int,
                       ignore_index: int, filename: str) -> None:
    """Check that a label map holds only class indices or ``ignore_index``.

    Args:
        label (np.ndarray | torch.Tensor): Label map of any shape.
        num_classes (int): Number of classes ``C``.
        ignore_index (int): The ignored label value (mmseg: 255).
        filename (str): File the label came from, named in the error.

    Raises:
        ValueError: Some values lie outside
            ``[0, num_classes) ∪ {ignore_index}``.
    """
    if num_classes <= 0:
        raise ValueError(f'num_classes must be positive, got {num_classes}')
    values, count = _invalid_values(label, num_classes, ignore_index)
    if not values:
        return
    shown = values[:10] + (['...'] if len(values) > 10 else [])
    raise ValueError(
        f'Label map {filename!r} holds value(s) {shown} ({count} pixels) '
        f'outside the allowed [0, {num_classes}) ∪ {{{ignore_index}}} '
        f'({num_classes} classes, ignore_index={ignore_index}). If class '
        'ids start at 1 and 0 means "unlabeled", set reduce_zero_label=True; '
        'if the labels are colour-coded (RGB palette) or use another id '
        'scheme (e.g. Cityscapes label ids instead of train ids), convert '
        'them to class indices first; otherwise check the classes in the '
        "dataset's metainfo and the model's num_classes.")


#: Keys of a data info that name the files of a sample.
SAMPLE_FILE_KEYS = ('img_path', 'seg_map_path')


@contextmanager
def naming_sample_files(info: dict, sample: str) -> Iterator[None]:
    """Re-raise an error of loading a sample with the sample's files.

    Decoders report a corrupt or truncated file without its name (PIL:
    ``cannot identify image file <_io.BytesIO ...>``; mmseg's
    ``LoadAnnotations``: ``'NoneType' object has no attribute 'squeeze'``).
    Wrap the pipeline call of one sample in this context: an error whose
    message does not name the sample's files yet is re-raised, with the same
    type and chained to the original, naming them.

    Args:
        info (dict): The sample's data info (``img_path``, ``seg_map_path``).
        sample (str): How to call the sample, e.g.
            ``'ToyShapesDataset sample 3'``.
    """
    try:
        yield
    except Exception as error:
        named = {
            key: info[key]
            for key in SAMPLE_FILE_KEYS if isinstance(info.get(key), str)
        }
        text = str(error)
        if not named or any(path in text for path in named.values()):
            raise
        files = ', '.join(f'{key}={path!r}' for key, path in named.items())
        message = (
            f'{sample} ({files}) failed to load: {type(error).__name__}: '
            f'{text}. If a file cannot be decoded it is corrupt or '
            'truncated: replace it with an intact copy or remove it from '
            'the split file.')
        try:
            renamed = type(error)(message)
        except Exception:  # an exception type with other arguments
            raise error
        raise renamed from error
