# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Synthetic batches shaped like the dataloader's, for tests and benchmarks."""
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample


def fake_packed_batch(num: int,
                      size: int,
                      num_classes: int,
                      with_label: bool = True) -> dict:
    """A collated batch as ``PackSegInputs`` + ``pseudo_collate`` give it.

    Args:
        num (int): Number of images.
        size (int): Height and width.
        num_classes (int): Labels are drawn from ``[0, num_classes)``.
        with_label (bool): Attach ``gt_sem_seg``. Defaults to True.

    Returns:
        dict: ``{'inputs': [uint8 (3, H, W)], 'data_samples': [...]}``.
    """
    inputs, samples = [], []
    for _ in range(num):
        inputs.append(torch.randint(0, 256, (3, size, size),
                                    dtype=torch.uint8))
        sample = SegDataSample()
        if with_label:
            sample.gt_sem_seg = PixelData(
                data=torch.randint(0, num_classes, (1, size, size)))
        sample.set_metainfo(
            dict(img_shape=(size, size), ori_shape=(size, size),
                 pad_shape=(size, size)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)
