# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Unreliable-pixel contrastive loss ``L_c`` (U2PL paper, Sec. 3.3).

Anchors are reliable pixels (student features), the positive key of a class
is its prototype (mean teacher feature over its reliable pixels), and the
negative keys come from a category-wise memory bank filled with the teacher
features of *unreliable* pixels that are unlikely to belong to the class.
Everything is vectorised over pixels and classes, and distributed training
gives exactly the loss of one process holding the whole global batch.

The module is longer than the others because it is one idea: the loss of
paper Eq. 5-7 with its sampling (anchors, negatives by rank, Eq. 6),
its prototypes and its exact multi-GPU gathering, which share their
tensors and cannot be checked apart.
"""
import warnings
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine import dist
from mmseg.registry import MODELS
from torch import Tensor, nn

from ...utils.misc import is_int
from ..utils.reliability import entropy, partition_by_entropy
from .memory_bank import CategoryMemoryBank

_BANK_DTYPES = {
    'float32': torch.float32,
    'float16': torch.float16,
    'bfloat16': torch.bfloat16,
}
_EPS = 1e-12
#: Where unlabeled negatives come from (paper Table 4): the highest-entropy
#: ``alpha_t`` % (the paper), the lowest-entropy ``alpha_t`` %, or every
#: valid unlabeled pixel.
NEGATIVE_SOURCES = ('unreliable', 'reliable', 'all')


def class_ranks(probs: Tensor) -> Tensor:
    """Rank of every class when sorted by descending probability.

    ``rank_c(p)`` is the position of class ``c`` in that order, 0 for the
    most likely class. Ties keep the class order (lower class id first).

    Args:
        probs (Tensor): ``(N, C)`` probabilities.

    Returns:
        Tensor: ``(N, C)`` long ranks.
    """
    order = torch.argsort(probs, dim=1, descending=True, stable=True)
    positions = torch.arange(
        probs.shape[1], device=probs.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def anchor_candidate_mask(probs: Tensor, labels: Tensor, reliable_mask: Tensor,
                          delta_p: float) -> Tensor:
    """Pixels that may serve as anchors of each class.

    Pixel ``i`` is an anchor candidate of class ``c`` when it is reliable,
    labelled (or pseudo-labelled) ``c`` and the teacher gives ``p[c] >
    delta_p``.

    Args:
        probs (Tensor): ``(N, C)`` teacher probabilities.
        labels (Tensor): ``(N,)`` long labels; only read where
            ``reliable_mask`` is True.
        reliable_mask (Tensor): ``(N,)`` bool, reliable valid pixels.
        delta_p (float): Probability threshold ``delta_p``.

    Returns:
        Tensor: ``(N, C)`` bool mask.
    """
    classes = torch.arange(probs.shape[1], device=probs.device)
    return (reliable_mask.unsqueeze(1) & (labels.unsqueeze(1) == classes)
            & (probs > delta_p))


def negative_candidate_mask(probs: Tensor, labels: Tensor,
                            labeled_mask: Tensor, unreliable_mask: Tensor,
                            rank_low: int, rank_high: int) -> Tensor:
    """Pixels whose teacher features are negative keys of each class.

    For class ``c``:

    - a labeled pixel is a candidate when its label is not ``c`` and
      ``rank_c(p) < rank_low``;
    - an unlabeled pixel is a candidate when it is unreliable and
      ``rank_low <= rank_c(p) < min(rank_high, C)``.

    Args:
        probs (Tensor): ``(N, C)`` teacher probabilities.
        labels (Tensor): ``(N,)`` long labels; only read where
            ``labeled_mask`` is True.
        labeled_mask (Tensor): ``(N,)`` bool, the *valid* pixels of labeled
            images (ignored pixels excluded).
        unreliable_mask (Tensor): ``(N,)`` bool, the unreliable pixels of
            unlabeled images (the source of unlabeled negatives; the
            ablations of paper Table 4 pass the reliable or all valid
            unlabeled pixels instead).
        rank_low (int): ``r_l``.
        rank_high (int): ``r_h``, clipped to ``C``.

    Returns:
        Tensor: ``(N, C)`` bool mask.
    """
    num_classes = probs.shape[1]
    ranks = class_ranks(probs)
    classes = torch.arange(num_classes, device=probs.device)
    labeled_negatives = (
        labeled_mask.unsqueeze(1)
        & (labels.unsqueeze(1) != classes)
        & (ranks < rank_low))
    unlabeled_negatives = (
        unreliable_mask.unsqueeze(1) & (ranks >= rank_low)
        & (ranks < min(rank_high, num_classes)))
    return labeled_negatives | unlabeled_negatives


def _nonzero_of_size(mask: Tensor, size: int) -> Tensor:
    """``mask.nonzero()`` when its row count ``size`` is known on the host.

    ``torch.nonzero_static`` needs no synchronisation to size its output;
    torch versions without it on the mask's device fall back to
    ``nonzero``, which gives the same rows.
    """
    if size == 0:
        return torch.zeros((0, mask.dim()),
                           dtype=torch.long,
                           device=mask.device)
    try:
        return torch.nonzero_static(mask, size=size)
    except (AttributeError, NotImplementedError):
        return mask.nonzero()


def _all_gather_rows(tensors: Sequence[Tensor]) -> Tuple[Tensor, ...]:
    """All-gather tensors whose first dimension differs between ranks.

    The tensors of one call share their first dimension. Sizes are exchanged
    first, then every rank pads to the largest size, gathers and trims.
    Without a process group the inputs are returned unchanged.
    """
    if dist.get_world_size() == 1:
        return tuple(tensors)
    num_rows = tensors[0].shape[0]
    sizes = dist.all_gather(
        torch.tensor([num_rows], dtype=torch.long, device=tensors[0].device))
    sizes = [int(size) for size in sizes]
    padded_rows = max(max(sizes), 1)
    gathered = []
    for tensor in tensors:
        padded = tensor.new_zeros((padded_rows, ) + tuple(tensor.shape[1:]))
        padded[:num_rows] = tensor
        parts = dist.all_gather(padded)
        gathered.append(
            torch.cat([part[:size] for part, size in zip(parts, sizes)]))
    return tuple(gathered)


@MODELS.register_module()
class UnreliableContrastiveLoss(nn.Module):
    """Unreliable-pixel contrastive loss of U2PL with a memory bank.

    For every class ``c`` with anchors and a non-empty memory bank, each
    anchor (a reliable pixel of class ``c``, student feature) is contrasted
    with the class prototype (positive key) and ``num_negatives`` teacher
    features drawn from the bank of ``c`` (negative keys)::

        l = -log(exp(s+ / tau) / (exp(s+ / tau) + sum_j exp(s-_j / tau)))

    with cosine similarities ``s``. The loss is the mean over anchors, then
    over the contributing classes, times ``loss_weight``. Negative
    candidates are pushed into the bank, gathered from all ranks, before the
    negatives are drawn.

    ``forward`` writes the state of a step (bank push, momentum prototype)
    and :meth:`end_step` keeps or reverts it, so that a skipped training
    step leaves it untouched; features with NaN/Inf never enter the bank.

    In distributed training prototypes use the sums and counts of all ranks,
    every rank pushes the same gathered candidates (identical banks), and
    the per-rank loss is scaled so that DDP's gradient averaging yields the
    single-process loss of the global batch.

    Args:
        num_classes (int): Number of classes ``C``.
        feat_channels (int): Channels ``D`` of the representation.
            Defaults to 256.
        memory_size (int | Sequence[int]): Capacity of the bank of each
            class (one value for all or one per class). Defaults to 30000.
        num_anchors (int, optional): Anchors drawn with replacement per class
            and step; None uses every anchor candidate. Defaults to 256.
        num_negatives (int): Negatives per anchor. Defaults to 50.
        temperature (float): ``tau``. Defaults to 0.5.
        delta_p (float): Anchors need teacher probability ``> delta_p`` for
            their class. Defaults to 0.3.
        rank_low (int): ``r_l``. Defaults to 3.
        rank_high (int): ``r_h`` (clipped to ``C``). Defaults to 20.
        prototype_momentum (float, optional): When set, a persistent
            prototype ``proto = m * proto + (1 - m) * batch_mean`` (first
            batch mean as initial value) replaces the batch mean.
            Defaults to None.
        loss_weight (float): ``lambda_c``. Defaults to 0.1.
        ignore_index (int): Label of invalid pixels. Defaults to 255.
        bank_dtype (str): Storage dtype of the memory bank, one of
            ``'float32'``, ``'float16'``, ``'bfloat16'``.
            Defaults to ``'float32'``.
        negative_source (str): Which unlabeled pixels may become negative
            keys (paper Table 4); the rank condition ``r_l <= rank_c <
            r_h`` applies to all of them and labeled negatives are the same
            for every value. ``'unreliable'``: the ``alpha_t`` % with the
            highest teacher entropy (the paper); ``'reliable'``: the
            ``alpha_t`` % with the lowest; ``'all'``: every valid unlabeled
            pixel. Defaults to ``'unreliable'``.
        loss_name (str): Name of the loss item. Defaults to
            ``'loss_contrast'``.

    Example:
        >>> # VOC (21 classes), banks of 50000 for background, 30000 else
        >>> contrastive_loss = dict(
        ...     type='UnreliableContrastiveLoss',
        ...     num_classes=21,
        ...     feat_channels=256,
        ...     memory_size=[50000] + [30000] * 20,
        ...     num_anchors=256,
        ...     num_negatives=50,
        ...     temperature=0.5,
        ...     delta_p=0.3,
        ...     rank_low=3,
        ...     rank_high=20,
        ...     loss_weight=0.1)
        >>> # ablation of paper Table 4: negatives from reliable pixels
        >>> contrastive_loss = dict(
        ...     type='UnreliableContrastiveLoss', negative_source='reliable')
    """

    def __init__(self,
                 num_classes: int,
                 feat_channels: int = 256,
                 memory_size: Union[int, Sequence[int]] = 30000,
                 num_anchors: Optional[int] = 256,
                 num_negatives: int = 50,
                 temperature: float = 0.5,
                 delta_p: float = 0.3,
                 rank_low: int = 3,
                 rank_high: int = 20,
                 prototype_momentum: Optional[float] = None,
                 loss_weight: float = 0.1,
                 ignore_index: int = 255,
                 bank_dtype: str = 'float32',
                 loss_name: str = 'loss_contrast',
                 negative_source: str = 'unreliable') -> None:
        super().__init__()
        self._check_args(num_classes, feat_channels, memory_size, num_anchors,
                         num_negatives, temperature, delta_p, rank_low,
                         rank_high, prototype_momentum, loss_weight,
                         bank_dtype, negative_source)
        if num_classes <= rank_low:
            warnings.warn(
                f'UnreliableContrastiveLoss: num_classes={num_classes} <= '
                f'rank_low={rank_low}, so no class can rank in [rank_low, '
                f'rank_high) and unlabeled pixels never become negative '
                f'candidates: the memory bank is filled from labeled pixels '
                f'only. Set rank_low below num_classes (e.g. rank_low='
                f'{max(num_classes - 1, 0)}) to use unreliable pixels as '
                f'negatives.', UserWarning)
        self.num_classes = num_classes
        self.feat_channels = feat_channels
        self.num_anchors = num_anchors
        self.num_negatives = num_negatives
        self.temperature = float(temperature)
        self.delta_p = float(delta_p)
        self.rank_low = rank_low
        self.rank_high = rank_high
        self.prototype_momentum = prototype_momentum
        self.loss_weight = float(loss_weight)
        self.ignore_index = ignore_index
        self.negative_source = negative_source
        self._loss_name = loss_name
        self.memory_bank = CategoryMemoryBank(
            num_classes,
            feat_channels,
            memory_size,
            dtype=_BANK_DTYPES[bank_dtype])
        if prototype_momentum is not None:
            self.register_buffer('prototype',
                                 torch.zeros(num_classes, feat_channels))
            self.register_buffer('prototype_initialized',
                                 torch.zeros(num_classes, dtype=torch.bool))
        #: ``(prototype, prototype_initialized)`` before the last forward
        self._prototype_undo: Optional[Tuple[Tensor, Tensor]] = None

    @property
    def loss_name(self) -> str:
        """Name of the loss item (mmseg convention)."""
        return self._loss_name

    @staticmethod
    def _check_args(num_classes, feat_channels, memory_size, num_anchors,
                    num_negatives, temperature, delta_p, rank_low, rank_high,
                    prototype_momentum, loss_weight, bank_dtype,
                    negative_source) -> None:
        """Raise a ValueError naming the first bad constructor argument."""
        prefix = 'UnreliableContrastiveLoss:'

        for name, value in (('num_classes', num_classes),
                            ('feat_channels', feat_channels), ('num_negatives',
                                                               num_negatives)):
            if not is_int(value) or value <= 0:
                raise ValueError(
                    f'{prefix} {name} must be a positive int, got {value!r}')
        if num_anchors is not None and (not is_int(num_anchors)
                                        or num_anchors <= 0):
            raise ValueError(f'{prefix} num_anchors must be a positive int '
                             f'or None (all anchors), got {num_anchors!r}')
        if is_int(memory_size):
            sizes = [memory_size]
        elif isinstance(memory_size, Sequence) \
                and not isinstance(memory_size, str):
            sizes = list(memory_size)
            if len(sizes) != num_classes:
                raise ValueError(
                    f'{prefix} memory_size must hold one size per class: got '
                    f'{len(sizes)} sizes for num_classes={num_classes}; pass '
                    'a single int to use the same size for every class')
        else:
            raise ValueError(f'{prefix} memory_size must be an int or a list '
                             f'of ints, got {memory_size!r}')
        if not all(is_int(size) and size > 0 for size in sizes):
            raise ValueError(f'{prefix} memory_size must contain positive '
                             f'ints, got {memory_size!r}')
        if not isinstance(temperature, (int, float)) or temperature <= 0:
            raise ValueError(
                f'{prefix} temperature must be > 0, got {temperature!r}')
        if not isinstance(delta_p, (int, float)) or not 0 <= delta_p < 1:
            raise ValueError(
                f'{prefix} delta_p must lie in [0, 1), got {delta_p!r}')
        if not is_int(rank_low) or rank_low < 0:
            raise ValueError(f'{prefix} rank_low must be an int >= 0, got '
                             f'{rank_low!r}')
        if not is_int(rank_high) or rank_high <= rank_low:
            raise ValueError(f'{prefix} rank_high must be an int > rank_low '
                             f'({rank_low}), got {rank_high!r}')
        momentum_ok = prototype_momentum is None or (isinstance(
            prototype_momentum, (int, float)) and 0 <= prototype_momentum < 1)
        if not momentum_ok:
            raise ValueError(f'{prefix} prototype_momentum must be None or '
                             f'lie in [0, 1), got {prototype_momentum!r}')
        if not isinstance(loss_weight, (int, float)):
            raise ValueError(
                f'{prefix} loss_weight must be a number, got {loss_weight!r}')
        if bank_dtype not in _BANK_DTYPES:
            raise ValueError(f'{prefix} bank_dtype must be one of '
                             f'{sorted(_BANK_DTYPES)}, got {bank_dtype!r}')
        if negative_source not in NEGATIVE_SOURCES:
            raise ValueError(
                f'{prefix} negative_source must be one of {NEGATIVE_SOURCES} '
                f"(paper Table 4; 'unreliable' is the paper's method), got "
                f'{negative_source!r}')

    def _check_inputs(self, student_feats: Tensor, teacher_feats: Tensor,
                      teacher_probs: Tensor, labels: Tensor, num_labeled: int,
                      alpha: float) -> None:
        """Raise a ValueError naming the first inconsistent input."""
        prefix = 'UnreliableContrastiveLoss.forward:'
        if student_feats.dim() != 4:
            raise ValueError(f'{prefix} student_feats must be (B, D, h, w), '
                             f'got shape {tuple(student_feats.shape)}')
        batch, channels, height, width = student_feats.shape
        if channels != self.feat_channels:
            raise ValueError(
                f'{prefix} student_feats has {channels} channels but '
                f'feat_channels={self.feat_channels}; set feat_channels to '
                'the representation head output channels')
        if tuple(teacher_feats.shape) != tuple(student_feats.shape):
            raise ValueError(
                f'{prefix} teacher_feats shape {tuple(teacher_feats.shape)} '
                f'differs from student_feats {tuple(student_feats.shape)}')
        expected = (batch, self.num_classes, height, width)
        if tuple(teacher_probs.shape) != expected:
            raise ValueError(
                f'{prefix} teacher_probs must have shape {expected} '
                f'(num_classes={self.num_classes}, representation size), '
                f'got {tuple(teacher_probs.shape)}')
        if tuple(labels.shape) != (batch, height, width):
            raise ValueError(
                f'{prefix} labels must have shape {(batch, height, width)} '
                f'(resized to the representation), got {tuple(labels.shape)}')
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f'{prefix} labels must be an integer tensor, '
                             f'got {labels.dtype}')
        if height * width == 0 or batch == 0:
            raise ValueError(f'{prefix} empty input of shape '
                             f'{tuple(student_feats.shape)}')
        if not 0 <= int(num_labeled) <= batch:
            raise ValueError(f'{prefix} num_labeled must lie in [0, {batch}] '
                             f'(batch size), got {num_labeled}')
        if not 0 <= float(alpha) <= 100:
            raise ValueError(f'{prefix} alpha (alpha_t in percent) must lie '
                             f'in [0, 100], got {alpha}')
        bad = (labels != self.ignore_index) & ((labels < 0) |
                                               (labels >= self.num_classes))
        if bool(bad.any()):
            raise ValueError(
                f'{prefix} labels contain values outside [0, '
                f'{self.num_classes}) other than ignore_index='
                f'{self.ignore_index}, e.g. {int(labels[bad][0])}; check '
                'num_classes, ignore_index and the label files')

    def forward(
            self,
            student_feats: Tensor,
            teacher_feats: Tensor,
            teacher_probs: Tensor,
            labels: Tensor,
            num_labeled: int,
            alpha: float) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Update the memory bank and compute the contrastive loss.

        All inputs are at the representation resolution ``(h, w)``; the
        first ``num_labeled`` images are labeled, the rest are the (mixed)
        unlabeled images.

        The state this step changes (the memory bank push and the momentum
        prototype) is written at once; :meth:`end_step` with ``keep=False``
        reverts it (a skipped training step).

        Args:
            student_feats (Tensor): ``(B, D, h, w)`` student representation
                ``z_s`` (requires grad).
            teacher_feats (Tensor): ``(B, D, h, w)`` teacher representation
                ``z_t``.
            teacher_probs (Tensor): ``(B, C, h, w)`` teacher softmax.
            labels (Tensor): ``(B, h, w)`` ground truth (labeled rows) and
                pseudo-labels (unlabeled rows), ``ignore_index`` where
                invalid.
            num_labeled (int): Number of labeled images ``B_l``.
            alpha (float): ``alpha_t`` in percent.

        Returns:
            tuple[Tensor, dict[str, Tensor]]: The weighted loss (float32
            scalar) and detached scalars for logging: ``num_anchors``,
            ``num_negative_candidates``, ``num_classes_used``,
            ``bank_fill_mean`` and ``bank_fill_min``.
        """
        self._check_inputs(student_feats, teacher_feats, teacher_probs, labels,
                           num_labeled, alpha)
        self._prototype_undo = None
        # similarities and cross-entropy in float32, whatever AMP does
        with torch.autocast(
                device_type=student_feats.device.type, enabled=False):
            out = self._forward(student_feats, teacher_feats, teacher_probs,
                                labels, int(num_labeled), float(alpha))
        return out

    @torch.no_grad()
    def end_step(self, keep: bool) -> None:
        """Keep the state the last ``forward`` wrote, or revert it
        (``keep=False``: bank and prototype bit for bit as before it)."""
        self.memory_bank.end_step(keep)
        undo, self._prototype_undo = self._prototype_undo, None
        if not keep and undo is not None:
            self.prototype.copy_(undo[0])
            self.prototype_initialized.copy_(undo[1])

    def _pixel_masks(self, teacher_probs: Tensor, labels: Tensor,
                     num_labeled: int, alpha: float) -> Dict[str, Tensor]:
        """Flattened per-pixel and per-(pixel, class) masks of section 5."""
        batch, num_classes = teacher_probs.shape[:2]
        probs = teacher_probs.detach().float().permute(0, 2, 3, 1).reshape(
            -1, num_classes)
        labels = labels.reshape(-1).long()
        valid = labels != self.ignore_index
        labeled = (torch.arange(batch, device=labels.device) < num_labeled)
        labeled = labeled.repeat_interleave(labels.numel() // batch)
        ent = entropy(teacher_probs.detach(), dim=1).reshape(-1)
        partition = partition_by_entropy(ent, valid & ~labeled, alpha)
        labeled_valid = valid & labeled
        reliable = labeled_valid | partition.reliable_mask
        unlabeled_source = dict(
            unreliable=partition.unreliable_mask,
            reliable=partition.reliable_mask,
            all=valid & ~labeled)[self.negative_source]
        labels = torch.where(valid, labels, torch.zeros_like(labels))
        classes = torch.arange(num_classes, device=labels.device)
        return dict(
            reliable_onehot=reliable.unsqueeze(1)
            & (labels.unsqueeze(1) == classes),
            anchor_mask=anchor_candidate_mask(probs, labels, reliable,
                                              self.delta_p),
            negative_mask=negative_candidate_mask(probs, labels, labeled_valid,
                                                  unlabeled_source,
                                                  self.rank_low,
                                                  self.rank_high))

    @torch.no_grad()
    def _global_statistics(
            self, teacher_feats: Tensor, reliable_onehot: Tensor,
            local_anchor_count: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Prototypes, reliable-pixel counts and anchor counts of all ranks.

        Args:
            teacher_feats (Tensor): ``(B, D, h, w)`` teacher features.
            reliable_onehot (Tensor): ``(B * h * w, C)`` bool.
            local_anchor_count (Tensor): ``(C,)`` anchors of this rank.

        Returns:
            tuple[Tensor, Tensor, Tensor]: ``prototype`` ``(C, D)`` float32,
            ``reliable_count`` ``(C,)`` and ``anchor_count`` ``(C,)``, the
            counts summed over ranks.
        """
        batch, channels = teacher_feats.shape[:2]
        # per-class sums straight from the (B, D, hw) layout: one batched
        # matmul, no transposed copy of the features
        feat_sums = torch.bmm(
            teacher_feats.detach().reshape(batch, channels, -1).float(),
            reliable_onehot.view(batch, -1,
                                 self.num_classes).float()).sum(0).t()
        reliable_count = reliable_onehot.sum(0).float().unsqueeze(1)
        anchor_count = local_anchor_count.float().unsqueeze(1)
        stats = torch.cat([feat_sums, reliable_count, anchor_count], dim=1)
        dist.all_reduce(stats, op='sum')
        feat_sums = stats[:, :-2]
        reliable_count, anchor_count = stats[:, -2], stats[:, -1]
        batch_mean = feat_sums / reliable_count.clamp(min=1).unsqueeze(1)
        if self.prototype_momentum is None:
            return batch_mean, reliable_count, anchor_count
        present = reliable_count > 0
        momentum = self.prototype_momentum
        previous = self.prototype.float()
        updated = torch.where(
            self.prototype_initialized.unsqueeze(1),
            momentum * previous + (1 - momentum) * batch_mean, batch_mean)
        prototype = torch.where(present.unsqueeze(1), updated, previous)
        self._prototype_undo = (self.prototype.clone(),
                                self.prototype_initialized.clone())
        self.prototype.copy_(prototype)
        self.prototype_initialized |= present
        return prototype, reliable_count, anchor_count

    @torch.no_grad()
    def _update_memory_bank(self, teacher_feats: Tensor,
                            negative_mask: Tensor) -> int:
        """Push the negative candidates of all ranks into the bank.

        Each rank first keeps a random subset of at most
        ``ceil(capacity_c / world_size)`` candidates of class ``c``, so that
        one step never brings more than ``capacity_c`` of them.

        Args:
            teacher_feats (Tensor): ``(B, D, h, w)`` teacher features.
            negative_mask (Tensor): ``(B * h * w, C)`` bool candidates.

        Returns:
            int: Number of candidates pushed (all ranks).
        """
        # the candidate counts are the step's one host read here (a
        # synchronisation on a GPU): they size the compaction and decide
        # whether a class exceeds its quota
        counts = negative_mask.sum(dim=0)
        host_counts = counts.tolist()
        world_size = dist.get_world_size()
        quota_list = [(capacity + world_size - 1) // world_size
                      for capacity in self.memory_bank.capacities]
        # class-major, pixels ascending; kept so below, so that every class
        # writes its ring sequentially
        class_ids, pixels = _nonzero_of_size(negative_mask.t(),
                                             sum(host_counts)).unbind(dim=1)
        # the random subset is drawn only when a class exceeds its quota
        if any(num > limit for num, limit in zip(host_counts, quota_list)):
            quota = torch.tensor(quota_list, device=counts.device)
            num_rows = class_ids.shape[0]
            starts = torch.cumsum(counts, 0) - counts
            # random order inside each class (ids are non-negative ints)
            keys = class_ids.double() + torch.rand(
                num_rows, dtype=torch.float64, device=class_ids.device)
            order = torch.argsort(keys)
            sorted_ids = class_ids[order]
            pos = torch.arange(num_rows, device=class_ids.device) \
                - starts[sorted_ids]
            # the random subset, back in class-major pixel order (its size
            # is known on the host: no synchronisation)
            num_chosen = sum(map(min, host_counts, quota_list))
            chosen = order[_nonzero_of_size(pos < quota[sorted_ids],
                                            num_chosen)[:, 0]].sort().values
            class_ids, pixels = class_ids[chosen], pixels[chosen]
        # one row per pixel, contiguous: a pixel is a candidate of several
        # classes, so the bank gathers its rows from this table itself
        table = teacher_feats.detach().permute(0, 2, 3, 1).reshape(
            -1, self.feat_channels)
        # rows with NaN/Inf features never enter the bank; the ids come
        # from nonzero over C columns: pushed without the range check
        if world_size == 1:
            self.memory_bank.push(class_ids, table, pixels, check=False)
            return class_ids.shape[0]
        feats = table.index_select(0, pixels).to(self.memory_bank.dtype)
        class_ids, feats = _all_gather_rows([class_ids, feats])
        self.memory_bank.push(class_ids, feats, check=False)
        return class_ids.shape[0]

    def _sample_anchors(self, anchor_mask: Tensor) -> Tuple[Tensor, Tensor]:
        """Anchor pixels of each class.

        Args:
            anchor_mask (Tensor): ``(P, C)`` bool anchor candidates.

        Returns:
            tuple[Tensor, Tensor]: ``(class_ids, pixels)`` of the ``K``
            anchors. With ``num_anchors`` set, ``K = C * num_anchors``
            (drawn with replacement); a class without candidates gets
            arbitrary pixels that the caller masks out.
        """
        if self.num_anchors is None:
            class_ids, pixels = anchor_mask.t().nonzero(as_tuple=True)
            return class_ids, pixels
        weights = anchor_mask.t().float()
        has_anchor = anchor_mask.any(dim=0, keepdim=True).t()
        weights = torch.where(has_anchor, weights, torch.ones_like(weights))
        pixels = torch.multinomial(
            weights, self.num_anchors, replacement=True).reshape(-1)
        class_ids = torch.arange(
            self.num_classes,
            device=anchor_mask.device).repeat_interleave(self.num_anchors)
        return class_ids, pixels

    def _anchor_losses(self, anchors: Tensor, positives: Tensor,
                       negatives: Tensor) -> Tensor:
        """InfoNCE of each anchor against its positive and negatives.

        Args:
            anchors (Tensor): ``(K, D)`` anchor features.
            positives (Tensor): ``(K, D)`` positive keys.
            negatives (Tensor): ``(K, N, D)`` negative keys.

        Returns:
            Tensor: ``(K,)`` float32 cross-entropy with target 0.
        """
        anchors = F.normalize(anchors.float(), dim=1, eps=_EPS)
        positives = F.normalize(positives.float(), dim=1, eps=_EPS)
        negatives = negatives.float()
        pos_sim = (anchors * positives).sum(dim=1, keepdim=True)
        # cosine without materialising normalised copies of the negatives
        neg_sim = torch.einsum('kd,knd->kn', anchors, negatives) \
            / negatives.norm(dim=2).clamp(min=_EPS)
        logits = torch.cat([pos_sim, neg_sim], dim=1) / self.temperature
        return torch.logsumexp(logits, dim=1) - logits[:, 0]

    def _forward(self, student_feats: Tensor, teacher_feats: Tensor,
                 teacher_probs: Tensor, labels: Tensor, num_labeled: int,
                 alpha: float) -> Tuple[Tensor, Dict[str, Tensor]]:
        num_classes = self.num_classes
        world_size = dist.get_world_size()
        masks = self._pixel_masks(teacher_probs, labels, num_labeled, alpha)

        class_ids, pixels = self._sample_anchors(masks['anchor_mask'])
        has_anchor = masks['anchor_mask'].any(dim=0)
        device = student_feats.device
        local_anchor_count = torch.zeros(
            num_classes,
            device=device).index_add_(0, class_ids,
                                      has_anchor[class_ids].float())
        prototype, reliable_count, anchor_count = self._global_statistics(
            teacher_feats, masks['reliable_onehot'], local_anchor_count)
        num_pushed = self._update_memory_bank(teacher_feats,
                                              masks['negative_mask'])

        # ids come from arange/nonzero over C: no need to check their range
        negatives, bank_valid = self.memory_bank.sample_for(
            class_ids, self.num_negatives, check=False)
        # anchor rows read straight from (B, D, h, w): no transposed copy
        batch, channels = student_feats.shape[:2]
        per_image = student_feats[0, 0].numel()
        image = torch.div(pixels, per_image, rounding_mode='floor')
        flat = student_feats.reshape(batch, channels, per_image)
        anchors = flat[image, :, pixels % per_image]
        per_anchor = self._anchor_losses(anchors, prototype[class_ids],
                                         negatives)
        used = has_anchor[class_ids] & bank_valid
        local_sum = torch.zeros(
            num_classes, device=device).index_add(
                0, class_ids,
                torch.where(used, per_anchor, torch.zeros_like(per_anchor)))
        # a class contributes with anchors on some rank and a non-empty bank
        # (identical on all ranks), when at least two classes are present
        bank_filled = self.memory_bank.fill > 0
        contributing = (anchor_count > 0) & bank_filled & (
            (reliable_count > 0).sum() >= 2)
        # sum of local anchor losses / global anchor count * world_size:
        # DDP's gradient average then equals the single-process mean
        class_loss = local_sum / anchor_count.clamp(min=1) * world_size
        num_used = contributing.sum()
        loss = torch.where(contributing, class_loss,
                           torch.zeros_like(class_loss)).sum() \
            / num_used.clamp(min=1)
        # keep the graph connected for DDP even when no class contributes
        # (the anchor gather reaches all of student_feats)
        loss = loss * self.loss_weight + 0. * anchors.sum(dtype=torch.float32)

        fill_ratio = self.memory_bank.fill_ratio()
        log_vars = dict(
            num_anchors=torch.where(contributing, anchor_count,
                                    torch.zeros_like(anchor_count)).sum(),
            num_negative_candidates=torch.tensor(
                float(num_pushed), device=device),
            num_classes_used=num_used.float(),
            bank_fill_mean=fill_ratio.mean(),
            bank_fill_min=fill_ratio.min())
        return loss, {key: value.detach() for key, value in log_vars.items()}
