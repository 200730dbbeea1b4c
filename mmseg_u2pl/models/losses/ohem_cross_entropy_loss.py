# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Cross-entropy averaged over the pixels that OHEM keeps."""
from typing import Optional

from mmseg.models.losses import CrossEntropyLoss
from mmseg.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class OHEMCrossEntropyLoss(CrossEntropyLoss):
    """Cross-entropy averaged over the pixels an OHEM sampler keeps.

    mmseg's ``OHEMPixelSampler`` gives the decode head 0/1 pixel weights
    (1 on the kept hard pixels) and ``CrossEntropyLoss`` multiplies the
    per-pixel loss by them, then averages over ALL pixels of the batch: the
    loss shrinks with the kept fraction (to ~0.1 on Cityscapes crops). The
    U2PL reference code (and OHEM as usually defined) averages over the kept
    pixels only. This loss does that: with ``weight`` from a sampler,

        loss = sum(CE * weight) / sum(weight)

    and it is mmseg's ``CrossEntropyLoss`` otherwise (no sampler, or a
    ``reduction`` other than ``'mean'``). The normaliser is a tensor: no
    host synchronisation. With ``class_weight`` the sum is still divided by
    the number of kept pixels (mmseg's convention), not by the sum of their
    class weights (PyTorch's).

    Kept pixels are chosen by the sampler: ``OHEMPixelSampler(thresh,
    min_kept)`` keeps the valid pixels whose probability for their label is
    below ``max(thresh, p_k)``, with ``p_k`` the ``k``-th smallest such
    probability of the batch and ``k = min_kept x images in the batch``:
    its ``min_kept`` counts per image. The reference's OHEM (threshold 0.7,
    ``min_kept`` 100,000) counts per GPU batch, so with 2 labeled images per
    GPU (Cityscapes) ``min_kept=50000`` reproduces it.

    Args:
        **kwargs: Those of mmseg's ``CrossEntropyLoss`` (``loss_weight``,
            ``class_weight``, ``loss_name``, ...); ``use_sigmoid`` and
            ``use_mask`` must stay False.

    Example:
        >>> ohem = dict(type='OHEMPixelSampler', thresh=0.7, min_kept=50000)
        >>> decode_head = dict(
        ...     sampler=ohem,
        ...     loss_decode=dict(type='OHEMCrossEntropyLoss', loss_weight=1.0))
    """

    def __init__(self, **kwargs) -> None:
        if kwargs.get('use_sigmoid') or kwargs.get('use_mask'):
            raise ValueError(
                'OHEMCrossEntropyLoss is a softmax cross-entropy: remove '
                'use_sigmoid / use_mask from its config.')
        super().__init__(**kwargs)

    def forward(self,
                cls_score: Tensor,
                label: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[Tensor] = None,
                reduction_override: Optional[str] = None,
                **kwargs) -> Tensor:
        """The loss; ``weight`` (the sampler's) sets the normaliser."""
        reduction = reduction_override or self.reduction
        if weight is not None and avg_factor is None and reduction == 'mean':
            avg_factor = weight.float().sum()
        return super().forward(
            cls_score,
            label,
            weight=weight,
            avg_factor=avg_factor,
            reduction_override=reduction_override,
            **kwargs)
