# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Per-pixel maps of a segmentation batch: valid pixels, labels, masks."""
from typing import Optional

import torch
import torch.nn.functional as F
from mmseg.utils import SampleList
from torch import Tensor


def valid_pixel_mask(data_samples: SampleList, inputs: Tensor) -> Tensor:
    """True on image pixels, False on the padding added by batching.

    mmseg pads at the bottom/right up to the batch size; ``img_shape`` is the
    size before padding.
    """
    mask = torch.zeros(
        inputs.shape[0],
        *inputs.shape[-2:],
        dtype=torch.bool,
        device=inputs.device)
    for i, sample in enumerate(data_samples):
        height, width = sample.metainfo.get('img_shape', inputs.shape[-2:])
        mask[i, :height, :width] = True
    return mask


def unlabeled_ground_truth(data_samples: SampleList,
                           device) -> Optional[Tensor]:
    """Stacked unlabeled ground truth when every sample carries one."""
    if not data_samples or not all('gt_sem_seg' in s for s in data_samples):
        return None
    return stack_ground_truth(data_samples).to(device)


def stack_ground_truth(data_samples: SampleList) -> Tensor:
    """``(B, H, W)`` long labels from the samples' (padded) ``gt_sem_seg``."""
    return torch.stack([s.gt_sem_seg.data.squeeze(0)
                        for s in data_samples]).long()


def resize_masks(masks: Tensor, size) -> Tensor:
    """Nearest resize of bool ``(B, H, W)`` masks (e.g. CutMix boxes)."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.interpolate(
        masks[:, None].float(), size=tuple(size), mode='nearest')[:, 0] > 0.5


def resize_labels(labels: Tensor, size) -> Tensor:
    """Nearest-neighbour resize of ``(B, H, W)`` integer labels."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(
        labels[:, None].float(), size=tuple(size),
        mode='nearest').squeeze(1).long()


def scalar(value) -> Tensor:
    """A detached float tensor for logging (mmengine logs tensors only)."""
    if isinstance(value, Tensor):
        return value.detach().float()
    return torch.tensor(float(value))
