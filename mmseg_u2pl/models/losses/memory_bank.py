# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Category-wise memory bank of negative keys (U2PL paper, Sec. 3.3).

One FIFO queue per class holds detached teacher features of the negative
candidates of that class. All queues live in a single flat buffer so that
``state_dict``, resume and ``.to(device)`` handle the bank like any other
model state, and so that pushing and sampling are vectorised across classes.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ...utils.misc import is_int


def _expand_capacity(capacity: Union[int, Sequence[int]],
                     num_classes: int) -> list:
    """Turn ``capacity`` into one positive int per class, or raise."""
    if is_int(capacity):
        sizes = [capacity] * num_classes
    elif isinstance(capacity, Sequence) and not isinstance(capacity, str):
        sizes = list(capacity)
    else:
        sizes = []
    if len(sizes) != num_classes or not all(
            is_int(size) and size > 0 for size in sizes):
        raise ValueError(
            'CategoryMemoryBank: capacity must be a positive int or one '
            f'positive int per class (num_classes={num_classes}), got '
            f'{capacity!r}')
    return sizes


class CategoryMemoryBank(nn.Module):
    """One FIFO queue of feature vectors per class (a ring buffer each).

    The queues lie back to back in one ``features`` buffer ``(sum(capacity),
    D)``; ``ptr[c]`` is the next slot class ``c`` writes and ``fill[c]`` how
    many of its slots hold data (the three persistent buffers). Rows with
    NaN/Inf are never stored. The last push can be reverted
    (:meth:`end_step`), so that a skipped training step leaves the bank
    untouched.

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
            if not is_int(value) or value <= 0:
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
        #: how to revert the last push (:meth:`end_step`)
        self._undo: Optional[Tuple[Tensor, Tensor, Tensor, Tensor]] = None

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
        # one host read (a synchronisation on a GPU)
        outside = (class_ids < 0) | (class_ids >= self.num_classes)
        if class_ids.numel() and bool(outside.any()):
            raise ValueError(
                f'CategoryMemoryBank.{where}: class ids must lie in '
                f'[0, {self.num_classes}), got values in '
                f'[{int(class_ids.min())}, {int(class_ids.max())}]')

    @torch.no_grad()
    def push(self,
             class_ids: Tensor,
             feats: Tensor,
             index: Optional[Tensor] = None,
             check: bool = True) -> None:
        """Append ``feats[k]`` to the queue of class ``class_ids[k]``.

        Rows enter in the order given; a full queue overwrites its oldest
        entries (of more rows than its capacity, the last ``capacity`` are
        kept). Non-finite rows (also after the cast to the bank's dtype) are
        dropped and do not move the pointer. Until the next push or
        :meth:`end_step`, the push can be reverted.

        Args:
            class_ids (Tensor): ``(K,)`` integer class of each row.
            feats (Tensor): ``(K, D)`` features (detached, cast to the
                bank's dtype and device), or with ``index`` a table
                ``(R, D)`` whose row ``index[k]`` goes to ``class_ids[k]``.
            index (Tensor, optional): ``(K,)`` rows of ``feats``.
            check (bool): Validate the arguments (the id range costs a
                host synchronisation; the loss passes ids it built).
                Defaults to True.
        """
        if check:
            self._check_push(class_ids, feats, index)
        self._undo = None
        if class_ids.shape[0] == 0:
            return
        device = self.features.device
        class_ids = class_ids.to(device=device, dtype=torch.long)
        table = feats.detach().to(device=device)
        if index is None:
            index = torch.arange(class_ids.shape[0], device=device)
        rows, source, counts = self._plan_push(class_ids, table,
                                               index.to(device, torch.long))
        self._undo = (rows, self.features.index_select(0, rows),
                      self.ptr.clone(), self.fill.clone())
        self.features.index_copy_(
            0, rows,
            table.index_select(0, source).to(self.dtype))
        self.ptr.copy_((self.ptr + counts) % self.capacity)
        self.fill.copy_(torch.minimum(self.fill + counts, self.capacity))

    def _check_push(self, class_ids: Tensor, feats: Tensor,
                    index: Optional[Tensor]) -> None:
        self._check_class_ids(class_ids, 'push')
        if index is None:
            rows_needed = f'({class_ids.shape[0]}, {self.feat_channels})'
            shape_ok = feats.dim() == 2 \
                and feats.shape[0] == class_ids.shape[0]
        else:
            if index.shape != class_ids.shape or \
                    index.dtype.is_floating_point or \
                    index.dtype == torch.bool:
                raise ValueError(
                    'CategoryMemoryBank.push: index must be an integer '
                    f'tensor of shape {tuple(class_ids.shape)} (one row of '
                    f'feats per class id), got {index.dtype} of shape '
                    f'{tuple(index.shape)}')
            rows_needed = f'(R, {self.feat_channels})'
            shape_ok = feats.dim() == 2
        if not shape_ok or feats.shape[1] != self.feat_channels:
            raise ValueError(
                f'CategoryMemoryBank.push: feats must have shape '
                f'{rows_needed} to match class_ids and feat_channels, got '
                f'{tuple(feats.shape)}')

    @torch.no_grad()
    def end_step(self, keep: bool) -> None:
        """Keep the last push, or revert it (``keep=False``: the buffers
        become bit for bit what they were before it)."""
        undo, self._undo = self._undo, None
        if keep or undo is None:
            return
        rows, old_rows, ptr, fill = undo
        self.features.index_copy_(0, rows, old_rows)
        self.ptr.copy_(ptr)
        self.fill.copy_(fill)

    def _finite_rows(self, table: Tensor) -> Tensor:
        """``(R,)`` bool: no NaN/Inf in the row, also after the cast (one
        row sum; a float32 sum overflow counts as non-finite)."""
        finite = torch.isfinite(table.sum(dim=1, dtype=torch.float32))
        limit = torch.finfo(self.dtype).max
        if limit < torch.finfo(table.dtype).max:
            finite &= table.abs().amax(dim=1) <= limit
        return finite

    def _plan_push(self, class_ids: Tensor, table: Tensor,
                   index: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Bank rows a push writes, the table rows they receive, and the
        rows each class gains (``(K',)``, ``(K',)``, ``(C,)``)."""
        num_rows = class_ids.shape[0]
        # non-finite rows form an extra group C that is never written
        finite = self._finite_rows(table)[index]
        groups = torch.where(finite, class_ids,
                             torch.full_like(class_ids, self.num_classes))
        group_counts = torch.bincount(groups, minlength=self.num_classes + 1)
        starts = torch.cumsum(group_counts, 0) - group_counts
        # position of every row among the rows of its group (arrival order)
        order = torch.argsort(groups, stable=True)
        pos = torch.empty_like(order)
        pos[order] = torch.arange(num_rows, device=order.device)
        pos -= starts[groups]
        counts = group_counts[:self.num_classes]
        capacity = self.capacity[class_ids]
        rows = self.offsets[class_ids] + (self.ptr[class_ids] + pos) % capacity
        # only the last `capacity` finite rows of a class survive a push, so
        # the written rows are distinct
        keep = finite & (pos >= counts[class_ids] - capacity)
        if not bool(keep.all()):
            kept = keep.nonzero(as_tuple=True)[0]
            rows, index = rows[kept], index[kept]
        return rows, index, counts

    @torch.no_grad()
    def sample_for(self,
                   class_ids: Tensor,
                   num: int,
                   generator: Optional[torch.Generator] = None,
                   check: bool = True) -> Tuple[Tensor, Tensor]:
        """Draw ``num`` entries (uniformly, with replacement) of the queue
        of each ``class_ids[k]``.

        Args:
            class_ids (Tensor): ``(K,)`` integer class ids (repeats allowed).
            num (int): Entries drawn per id.
            generator (torch.Generator, optional): Random generator on the
                bank's device. Defaults to the global one.
            check (bool): Validate the arguments, as in :meth:`push`.
                Defaults to True.

        Returns:
            tuple[Tensor, Tensor]: ``feats`` ``(K, num, D)`` in the bank's
            dtype, and ``valid`` ``(K,)`` bool, False where the queue is
            empty (the rows of those ids are arbitrary).
        """
        if check:
            self._check_class_ids(class_ids, 'sample_for')
            if not is_int(num) or num <= 0:
                raise ValueError('CategoryMemoryBank.sample_for: num must '
                                 f'be a positive int, got {num!r}')
        device = self.features.device
        class_ids = class_ids.to(device=device, dtype=torch.long)
        fill = self.fill[class_ids]
        uniform = torch.rand((class_ids.shape[0], num),
                             generator=generator,
                             device=device)
        # filled slots are [0, fill): the ring wraps only once it is full
        last = (fill - 1).clamp(min=0).unsqueeze(1)
        slots = torch.minimum((uniform * fill.unsqueeze(1)).long(), last)
        rows = (self.offsets[class_ids].unsqueeze(1) + slots).reshape(-1)
        feats = self.features.index_select(0, rows)
        return feats.view(slots.shape + (self.feat_channels, )), fill > 0

    def sample(self,
               num: int,
               generator: Optional[torch.Generator] = None
               ) -> Tuple[Tensor, Tensor]:
        """:meth:`sample_for` of every class: ``feats`` ``(C, num, D)`` and
        ``valid`` ``(C,)``."""
        class_ids = torch.arange(self.num_classes, device=self.fill.device)
        return self.sample_for(class_ids, num, generator)

    def get(self, class_id: int) -> Tensor:
        """The ``(fill[class_id], D)`` live entries of a class, oldest
        first."""
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
        """Filled fraction of every queue."""
        return self.fill.float() / self.capacity.float()
