# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""CutMix of the unlabeled batch (paper Sec. 3, Fig. 2)."""
from typing import Optional

import torch
from torch import Tensor


def cutmix_masks(batch_size: int,
                 height: int,
                 width: int,
                 prob: float = 0.5,
                 area_ratio: float = 0.5,
                 per_sample: bool = False,
                 device=None,
                 generator: Optional[torch.Generator] = None) -> Tensor:
    """Random CutMix boxes, one per image.

    With probability ``prob`` (once for the whole batch, or independently per
    image with ``per_sample=True``) image ``i`` gets a box of ``area_ratio``
    of the image area: width uniform in ``(area_ratio * W, W]``, height
    ``area / width``, position uniform. Inside the box image ``i`` takes the
    content of image ``(i + 1) mod B`` (see :func:`apply_cutmix`).

    Args:
        batch_size (int): ``B``.
        height (int): ``H``.
        width (int): ``W``.
        prob (float): Probability of mixing. Defaults to 0.5.
        area_ratio (float): Box area / image area, in (0, 1]. Defaults to 0.5.
        per_sample (bool): Draw the mixing decision per image instead of per
            batch. Defaults to False (the reference's choice).
        device: Device of the returned mask.
        generator (torch.Generator, optional): RNG (CPU) for reproducibility.

    Returns:
        Tensor: Bool mask ``(B, H, W)``, True inside the pasted box.
    """
    if not 0. < area_ratio <= 1.:
        raise ValueError(f'cutmix area_ratio must be in (0, 1], got '
                         f'{area_ratio}')
    if not 0. <= prob <= 1.:
        raise ValueError(f'cutmix prob must be in [0, 1], got {prob}')
    uniform = torch.rand(batch_size, 4, generator=generator)
    if per_sample:
        apply = uniform[:, 0] < prob
    else:
        apply = uniform[:1, 0].expand(batch_size) < prob
    area = area_ratio * height * width
    min_w = area_ratio * width
    box_w = (min_w + (width - min_w) * (1. - uniform[:, 1])).clamp(1., width)
    box_h = (area / box_w).clamp(1., height)
    box_w, box_h = box_w.round(), box_h.round()
    x0 = ((width - box_w + 1) * uniform[:, 2]).floor().clamp(max=width - box_w)
    y0 = ((height - box_h + 1) * uniform[:, 3]).floor().clamp(max=height -
                                                              box_h)
    xs = torch.arange(width).view(1, 1, width)
    ys = torch.arange(height).view(1, height, 1)
    inside_x = (xs >= x0.view(-1, 1, 1)) & (xs < (x0 + box_w).view(-1, 1, 1))
    inside_y = (ys >= y0.view(-1, 1, 1)) & (ys < (y0 + box_h).view(-1, 1, 1))
    mask = inside_x & inside_y & apply.view(-1, 1, 1)
    return mask.to(device) if device is not None else mask


def apply_cutmix(mask: Tensor, tensor: Tensor) -> Tensor:
    """Paste the boxes of ``mask``: image ``i`` takes ``(i+1) mod B`` inside.

    Args:
        mask (Tensor): Bool ``(B, H, W)`` from :func:`cutmix_masks`.
        tensor (Tensor): ``(B, H, W)`` or ``(B, C, H, W)`` with the same
            ``B, H, W`` (images, pseudo-labels, probabilities, entropy, ...).

    Returns:
        Tensor: The mixed tensor (a new tensor; the input is unchanged).
    """
    partner = torch.roll(tensor, shifts=-1, dims=0)
    if tensor.dim() == 4:
        mask = mask.unsqueeze(1)
    elif tensor.dim() != 3:
        raise ValueError('apply_cutmix expects a (B, H, W) or (B, C, H, W) '
                         f'tensor, got shape {tuple(tensor.shape)}')
    return torch.where(mask, partner, tensor)
