# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Entropy-based reliability of pseudo-labels (U2PL paper, Sec. 3.2-3.3).

Everything that decides whether a teacher prediction is *reliable* lives
here, once: the ``alpha_t`` schedule, the per-pixel entropy, the percentile
over valid pixels, and the reliable/unreliable partition built from them.
The unsupervised loss (:func:`entropy_filtered_loss`) is built on them
and the contrastive loss imports them.
"""
from typing import NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def alpha_schedule(alpha_0: float,
                   cur_iter: int,
                   max_iters: int,
                   start_iter: int = 0) -> float:
    """Share (in %) of unreliable pixels at iteration ``t``.

    ``alpha_t = alpha_0 * (1 - (t - t_0) / (T - t_0))``, clipped to
    ``[0, alpha_0]``. The paper decays over the whole schedule (``t_0 = 0``);
    ``t_0`` = the end of the supervised warm-up decays over the
    semi-supervised iterations only.

    Args:
        alpha_0 (float): Initial share in percent (paper: 20).
        cur_iter (int): Current iteration ``t`` (0-based).
        max_iters (int): Total iterations ``T``.
        start_iter (int): Iteration ``t_0`` where the decay starts (``alpha_t
            = alpha_0`` up to there). Defaults to 0.

    Returns:
        float: ``alpha_t`` in percent.
    """
    if not 0 <= start_iter < max_iters:
        raise ValueError(f'alpha_schedule: need 0 <= start_iter < max_iters, '
                         f'got start_iter={start_iter}, max_iters={max_iters}')
    progress = (cur_iter - start_iter) / (max_iters - start_iter)
    return float(alpha_0) * (1. - min(max(progress, 0.), 1.))


def entropy(probs: Tensor, dim: int = 1) -> Tensor:
    """Per-pixel entropy ``H(p) = -sum_c p_c log p_c`` (natural log).

    Computed in float32 whatever the input dtype (AMP-safe); ``0 log 0 = 0``.

    Args:
        probs (Tensor): Probabilities, e.g. ``(B, C, H, W)``.
        dim (int): The class dimension. Defaults to 1.

    Returns:
        Tensor: Entropy with ``dim`` removed, float32.
    """
    probs = probs.float()
    return -torch.special.xlogy(probs, probs).sum(dim=dim)


def masked_percentile(values: Tensor, mask: Tensor, q) -> Tensor:
    """The ``q``-th percentile of ``values[mask]``, as ``numpy.percentile``.

    Linear interpolation between the two closest ranks, like numpy's default.
    Works without a host-device synchronisation (no boolean indexing): masked
    out entries are sorted to the end and the rank is computed on device.

    Args:
        values (Tensor): Any shape.
        mask (Tensor): Bool tensor of the same shape; True = counted.
        q (float | Tensor): Percentile in ``[0, 100]``.

    Returns:
        Tensor: 0-d float32 tensor; 0 when no entry is valid.
    """
    flat = values.detach().reshape(-1).float()
    valid = mask.reshape(-1).bool()
    count = valid.sum()
    filled = torch.where(valid, flat, torch.full_like(flat, float('inf')))
    ordered, _ = torch.sort(filled)
    q = torch.as_tensor(q, dtype=torch.float32, device=flat.device)
    last = (count - 1).clamp(min=0)
    pos = (q.clamp(0., 100.) / 100.) * last.float()
    lower = pos.floor().long().clamp(min=0)
    upper = torch.minimum(lower + 1, last)
    frac = pos - lower.float()
    low_val = ordered[lower]
    high_val = ordered[upper]
    result = low_val + frac * (high_val - low_val)
    return torch.where(count > 0, result, torch.zeros_like(result))


class EntropyPartition(NamedTuple):
    """Reliable/unreliable split of pixels by teacher entropy.

    Attributes:
        reliable_mask (Tensor): Valid pixels with
            ``H <= percentile(H, alpha_t)`` (the lowest-entropy ``alpha_t`` %).
        unreliable_mask (Tensor): Valid pixels with
            ``H >= percentile(H, 100 - alpha_t)`` (the highest-entropy
            ``alpha_t`` %). The unsupervised loss ignores exactly these.
        low_thresh (Tensor): ``percentile(H, alpha_t)``.
        high_thresh (Tensor): ``percentile(H, 100 - alpha_t)``.
    """
    reliable_mask: Tensor
    unreliable_mask: Tensor
    low_thresh: Tensor
    high_thresh: Tensor


def partition_by_entropy(ent: Tensor, valid_mask: Tensor,
                         alpha: float) -> EntropyPartition:
    """Split valid pixels into reliable and unreliable ones (paper Sec. 3.2).

    Percentiles are taken over the valid pixels of the whole batch.

    Args:
        ent (Tensor): Per-pixel entropy, e.g. ``(B, H, W)``.
        valid_mask (Tensor): Bool, same shape; False for padding/ignored.
        alpha (float): ``alpha_t`` in percent.

    Returns:
        EntropyPartition: Masks (bool, same shape as ``ent``) and thresholds.
    """
    valid_mask = valid_mask.bool()
    low_thresh = masked_percentile(ent, valid_mask, alpha)
    high_thresh = masked_percentile(ent, valid_mask, 100. - alpha)
    reliable = valid_mask & (ent <= low_thresh)
    unreliable = valid_mask & (ent >= high_thresh)
    return EntropyPartition(reliable, unreliable, low_thresh, high_thresh)


def entropy_filtered_loss(
        logits: Tensor,
        pseudo_labels: Tensor,
        ent: Tensor,
        valid_mask: Tensor,
        alpha: float,
        ignore_index: int = 255) -> Tuple[Tensor, EntropyPartition, Tensor]:
    """The unsupervised loss ``L_u`` of U2PL (paper Eq. 3 with Eq. 8).

    Cross-entropy against the pseudo-labels on the valid pixels that are
    not among the highest-entropy ``alpha_t`` % (the unreliable ones),
    averaged over those kept pixels and weighted by the paper's
    ``lambda_u / eta = B * H * W / kept`` (Eq. 8)::

        L_u = mean_kept(CE) * all / kept = sum_kept(CE) * all / kept ** 2

    so the loss is the mean over kept pixels divided by the kept fraction
    (``all`` counts every pixel of the crops, padding included). No kept
    pixel gives 0. The caller multiplies by ``eta`` (``unsup_weight``).

    Args:
        logits (Tensor): ``(B, C, H, W)`` student logits at the size of the
            pseudo-labels.
        pseudo_labels (Tensor): ``(B, H, W)`` long teacher argmax.
        ent (Tensor): ``(B, H, W)`` teacher entropy.
        valid_mask (Tensor): ``(B, H, W)`` bool; False for padding.
        alpha (float): ``alpha_t`` in percent.
        ignore_index (int): Label that the cross-entropy ignores.
            Defaults to 255.

    Returns:
        tuple[Tensor, EntropyPartition, Tensor]: The float32 loss, the
        partition of the pixels, and the ``(B, H, W)`` bool mask of the
        pixels that the loss kept.
    """
    partition = partition_by_entropy(ent, valid_mask, alpha)
    kept = valid_mask.bool() & ~partition.unreliable_mask
    target = torch.where(kept, pseudo_labels,
                         torch.full_like(pseudo_labels, ignore_index))
    ce_sum = F.cross_entropy(
        logits.float(), target, ignore_index=ignore_index, reduction='sum')
    num_kept = kept.sum().clamp(min=1).float()
    loss = ce_sum * (target.numel() / num_kept) / num_kept
    return loss, partition, kept
