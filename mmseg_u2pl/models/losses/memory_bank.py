# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Category-wise memory bank of negative keys (U2PL, method section 5).

One FIFO queue per class holds detached teacher features of the negative
candidates of that class. All queues live in a single flat buffer so that
``state_dict``, resume and ``.to(device)`` handle the bank like any other
model state, and so that pushing and sampling are vectorised across classes.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn


def _expand_capacity(capacity: Union[int, Sequence[int]],
                     num_classes: int) -> list:
    """Turn ``capacity`` into one positive int per class, or raise."""
    if isinstance(capacity, bool):
        raise TypeError('CategoryMemoryBank: capacity must be an int or a '
                        f'sequence of ints, got {capacity!r}')
    if isinstance(capacity, int):
        capacities = [capacity] * num_classes
    elif isinstance(capacity, Sequence) and not isinstance(capacity, str):
        capacities = list(capacity)
        if len(capacities) != num_classes:
            raise ValueError(
                'CategoryMemoryBank: capacity must give one size per class: '
                f'got {len(capacities)} sizes for num_classes={num_classes}; '
                'pass a single int to use the same size for every class')
    else:
        raise TypeError('CategoryMemoryBank: capacity must be an int or a '
                        f'sequence of ints, got {capacity!r}')
    for cls, size in enumerate(capacities):
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError('CategoryMemoryBank: every capacity must be a '
                             f'positive int, got {size!r} for class {cls}')
    return capacities


class CategoryMemoryBank(nn.Module):
    """One FIFO queue of feature vectors per class (a ring buffer each).

    The queues are stored back to back in one ``features`` buffer of shape
    ``(sum(capacity), feat_channels)``; ``ptr[c]`` is the next slot that
    class ``c`` writes (its oldest entry once the queue is full) and
    ``fill[c]`` how many of its slots hold data. These three buffers are
    persistent; the per-class capacities and offsets are derived from the
    constructor arguments and are not saved.

    Args:
        num_classes (int): Number of classes ``C`` (one queue each).
        feat_channels (int): Length ``D`` of a feature vector.
        capacity (int | Sequence[int]): Queue length, the same for every
            class or one per class.
        dtype (torch.dtype): Storage dtype of the features.
            Defaults to ``torch.float32``.

    Example:
        >>> bank = CategoryMemoryBank(num_classes=3, feat_channels=2,
        ...                           capacity=[4, 2, 2])
        >>> bank.push(torch.tensor([0, 1, 0]), torch.randn(3, 2))
        >>> bank.fill
        tensor([2, 1, 0])
    """

    def __init__(self,
                 num_classes: int,
                 feat_channels: int,
                 capacity: Union[int, Sequence[int]],
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        for name, value in (('num_classes', num_classes), ('feat_channels',
                                                           feat_channels)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value <= 0:
                raise ValueError(f'CategoryMemoryBank: {name} must be a '
                                 f'positive int, got {value!r}')
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError('CategoryMemoryBank: dtype must be a floating '
                            f'torch.dtype, got {dtype!r}')
        self.num_classes = num_classes
        self.feat_channels = feat_channels
        self.capacities = _expand_capacity(capacity, num_classes)
        sizes = torch.tensor(self.capacities, dtype=torch.long)
        self.register_buffer(
            'features',
            torch.zeros(int(sizes.sum()), feat_channels, dtype=dtype))
        self.register_buffer('ptr', torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer('fill',
                             torch.zeros(num_classes, dtype=torch.long))
        # derived from the arguments: moved with the module, never saved
        self.register_buffer('capacity', sizes, persistent=False)
        self.register_buffer(
            'offsets', torch.cumsum(sizes, 0) - sizes, persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        """Storage dtype of the features."""
        return self.features.dtype

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, '
                f'feat_channels={self.feat_channels}, '
                f'capacity={self.capacities}, dtype={self.dtype}')

    def _check_class_ids(self, class_ids: Tensor, where: str) -> None:
        if class_ids.dtype.is_floating_point or class_ids.dtype == torch.bool:
            raise TypeError(f'CategoryMemoryBank.{where}: class_ids must be '
                            f'an integer tensor, got {class_ids.dtype}')
        if class_ids.dim() != 1:
            raise ValueError(f'CategoryMemoryBank.{where}: class_ids must be '
                             f'1-D, got shape {tuple(class_ids.shape)}')
        if class_ids.numel() and (bool(class_ids.min() < 0) or
                                  bool(class_ids.max() >= self.num_classes)):
            raise ValueError(
                f'CategoryMemoryBank.{where}: class ids must lie in '
                f'[0, {self.num_classes}), got values in '
                f'[{int(class_ids.min())}, {int(class_ids.max())}]')

    @torch.no_grad()
    def push(self, class_ids: Tensor, feats: Tensor) -> None:
        """Append ``feats[k]`` to the queue of class ``class_ids[k]``.

        Rows enter their queue in the order given. A full queue overwrites
        its oldest entries; when more rows than its capacity arrive for one
        class in a single call, the last ``capacity`` of them are kept.

        Args:
            class_ids (Tensor): ``(K,)`` integer class of each row.
            feats (Tensor): ``(K, D)`` features; detached and cast to the
                bank's dtype and device.
        """
        self._check_class_ids(class_ids, 'push')
        if feats.dim() != 2 or feats.shape[0] != class_ids.shape[0] \
                or feats.shape[1] != self.feat_channels:
            raise ValueError(
                'CategoryMemoryBank.push: feats must have shape '
                f'({class_ids.shape[0]}, {self.feat_channels}) to match '
                f'class_ids and feat_channels, got {tuple(feats.shape)}')
        num_rows = class_ids.shape[0]
        if num_rows == 0:
            return
        device = self.features.device
        class_ids = class_ids.to(device=device, dtype=torch.long)
        feats = feats.detach().to(device=device, dtype=self.dtype)

        # position of every row among the rows of its class (arrival order)
        order = torch.argsort(class_ids, stable=True)
        counts = torch.bincount(class_ids, minlength=self.num_classes)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.empty_like(order)
        pos[order] = torch.arange(num_rows, device=device)
        pos -= starts[class_ids]
        capacity = self.capacity[class_ids]
        slots = (self.ptr[class_ids] + pos) % capacity
        rows = self.offsets[class_ids] + slots
        # only the last `capacity` rows of a class survive this push
        keep = pos >= counts[class_ids] - capacity
        if bool(keep.all()):
            self.features.index_copy_(0, rows, feats)
        else:
            kept = keep.nonzero(as_tuple=True)[0]
            self.features.index_copy_(0, rows[kept],
                                      feats.index_select(0, kept))
        self.ptr.copy_((self.ptr + counts) % self.capacity)
        self.fill.copy_(torch.minimum(self.fill + counts, self.capacity))

    @torch.no_grad()
    def sample_for(
            self,
            class_ids: Tensor,
            num: int,
            generator: Optional[torch.Generator] = None
    ) -> Tuple[Tensor, Tensor]:
        """Draw ``num`` entries of the queue of each ``class_ids[k]``.

        Entries are drawn uniformly with replacement among the filled slots
        of the class, independently for every ``k``.

        Args:
            class_ids (Tensor): ``(K,)`` integer class ids (repeats allowed).
            num (int): Entries drawn per id.
            generator (torch.Generator, optional): Random generator on the
                bank's device. Defaults to the global one.

        Returns:
            tuple[Tensor, Tensor]: ``feats`` ``(K, num, D)`` in the bank's
            dtype, and ``valid`` ``(K,)`` bool, False where the queue is
            empty (the rows of those ids are arbitrary).
        """
        self._check_class_ids(class_ids, 'sample_for')
        if isinstance(num, bool) or not isinstance(num, int) or num <= 0:
            raise ValueError('CategoryMemoryBank.sample_for: num must be a '
                             f'positive int, got {num!r}')
        return self._sample_rows(class_ids, num, generator)

    @torch.no_grad()
    def _sample_rows(
            self,
            class_ids: Tensor,
            num: int,
            generator: Optional[torch.Generator] = None
    ) -> Tuple[Tensor, Tensor]:
        """:meth:`sample_for` without the (synchronising) input checks."""
        device = self.features.device
        class_ids = class_ids.to(device=device, dtype=torch.long)
        fill = self.fill[class_ids]
        uniform = torch.rand((class_ids.shape[0], num),
                             generator=generator,
                             device=device)
        # filled slots are [0, fill): the ring wraps only once it is full
        last = (fill - 1).clamp(min=0).unsqueeze(1)
        slots = torch.minimum((uniform * fill.unsqueeze(1)).long(), last)
        rows = self.offsets[class_ids].unsqueeze(1) + slots
        feats = self.features.index_select(0, rows.reshape(-1))
        return feats.view(rows.shape + (self.feat_channels, )), fill > 0

    def sample(
            self,
            num: int,
            generator: Optional[torch.Generator] = None
    ) -> Tuple[Tensor, Tensor]:
        """Draw ``num`` entries per class, with replacement.

        Args:
            num (int): Entries drawn per class.
            generator (torch.Generator, optional): Random generator on the
                bank's device. Defaults to the global one.

        Returns:
            tuple[Tensor, Tensor]: ``feats`` ``(C, num, D)`` and ``valid``
            ``(C,)`` bool, False for empty queues (their rows are arbitrary).
        """
        class_ids = torch.arange(self.num_classes, device=self.fill.device)
        return self.sample_for(class_ids, num, generator)

    def get(self, class_id: int) -> Tensor:
        """The live entries of one class in FIFO order, oldest first.

        Args:
            class_id (int): The class.

        Returns:
            Tensor: ``(fill[class_id], D)`` features.
        """
        if not 0 <= int(class_id) < self.num_classes:
            raise ValueError('CategoryMemoryBank.get: class_id must lie in '
                             f'[0, {self.num_classes}), got {class_id}')
        class_id = int(class_id)
        capacity = self.capacities[class_id]
        fill = int(self.fill[class_id])
        oldest = (int(self.ptr[class_id]) - fill) % capacity
        slots = (oldest + torch.arange(fill, device=self.fill.device)) \
            % capacity
        return self.features[int(self.offsets[class_id]) + slots]

    def fill_ratio(self) -> Tensor:
        """Filled fraction of every queue, ``(C,)`` float32, for logging."""
        return self.fill.float() / self.capacity.float()
