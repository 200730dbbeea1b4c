# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Category-wise memory bank of negative keys (U2PL paper, Sec. 3.3).

One FIFO queue per class holds detached teacher features of the negative
candidates of that class. All queues live in a single flat buffer so that
``state_dict``, resume and ``.to(device)`` handle the bank like any other
model state, and so that pushing and sampling are vectorised across classes.
"""
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ...utils.misc import is_int


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
        if not is_int(size) or size <= 0:
            raise ValueError('CategoryMemoryBank: every capacity must be a '
                             f'positive int, got {size!r} for class {cls}')
    return capacities


class StagedPush(NamedTuple):
    """A push waiting for :meth:`CategoryMemoryBank.commit`.

    The new content is not copied out of the caller's feature table: row
    ``rows[k]`` of the bank receives ``table[source[k]]``, gathered (and
    cast to the bank's dtype) only when it is written or sampled.
    """
    rows: Tensor  # (K',) rows of ``features`` to write
    source: Tensor  # (K',) the rows of ``table`` that they receive
    table: Tensor  # (R, D) detached features, on the bank's device
    ptr: Tensor  # (C,) ``ptr`` after the push
    fill: Tensor  # (C,) ``fill`` after the push


class CategoryMemoryBank(nn.Module):
    """One FIFO queue of feature vectors per class (a ring buffer each).

    The queues are stored back to back in one ``features`` buffer of shape
    ``(sum(capacity), feat_channels)``; ``ptr[c]`` is the next slot that
    class ``c`` writes (its oldest entry once the queue is full) and
    ``fill[c]`` how many of its slots hold data. These three buffers are
    persistent; the per-class capacities and offsets are derived from the
    constructor arguments and are not saved.

    Rows with NaN/Inf are never stored. A push can be staged
    (:meth:`stage`) and then committed or discarded, so that a training step
    that turns out to be bad leaves the bank untouched.

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
        self._staged: Optional[StagedPush] = None

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
             index: Optional[Tensor] = None) -> None:
        """Append ``feats[k]`` to the queue of class ``class_ids[k]``.

        Rows enter their queue in the order given. A full queue overwrites
        its oldest entries; when more rows than its capacity arrive for one
        class in a single call, the last ``capacity`` of them are kept. Rows
        that are not finite (NaN or Inf in any channel, after the cast to the
        bank's dtype) are dropped: they neither enter a queue nor move its
        pointer.

        Args:
            class_ids (Tensor): ``(K,)`` integer class of each row.
            feats (Tensor): ``(K, D)`` features; detached and cast to the
                bank's dtype and device. With ``index``, a table ``(R, D)``
                of which row ``index[k]`` goes to class ``class_ids[k]``
                (one feature may enter several queues without being copied
                first).
            index (Tensor, optional): ``(K,)`` rows of ``feats``.
                Defaults to None (``feats[k]`` for ``class_ids[k]``).
        """
        self.stage(class_ids, feats, index)
        self.commit()

    @torch.no_grad()
    def stage(self,
              class_ids: Tensor,
              feats: Tensor,
              index: Optional[Tensor] = None) -> None:
        """Prepare a :meth:`push` without writing it yet.

        Until :meth:`commit` writes it or :meth:`discard` drops it, sampling
        and :meth:`fill_ratio` see the bank as if the push had happened,
        while the buffers (``features``, ``ptr``, ``fill``, hence
        ``state_dict``) and :meth:`get` keep the committed state. A training
        step can so use its own negatives and still leave the bank untouched
        when the step is skipped (e.g. for a non-finite loss).

        Args:
            class_ids (Tensor): ``(K,)`` integer class of each row.
            feats (Tensor): ``(K, D)`` features, or a table ``(R, D)``
                with ``index``, as for :meth:`push`. It is not copied:
                do not modify it in place before the commit.
            index (Tensor, optional): ``(K,)`` rows of ``feats``, as for
                :meth:`push`.

        Raises:
            RuntimeError: If a staged push is neither committed nor
                discarded.
        """
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
        self._stage(class_ids, feats, index)

    @torch.no_grad()
    def _stage(self,
               class_ids: Tensor,
               feats: Tensor,
               index: Optional[Tensor] = None) -> None:
        """:meth:`stage` without the checks of its arguments, for callers
        whose class ids lie in ``[0, C)`` by construction (the range check
        reads the ids on the host: a synchronisation on a GPU)."""
        if self._staged is not None:
            raise RuntimeError(
                'CategoryMemoryBank.stage: a staged push is pending; call '
                'commit() or discard() before staging (or pushing) again')
        if class_ids.shape[0] == 0:
            return
        self._staged = self._plan_push(class_ids, feats, index)

    @torch.no_grad()
    def commit(self) -> None:
        """Write the staged push into the bank (no-op without one)."""
        staged, self._staged = self._staged, None
        if staged is None:
            return
        self.features.index_copy_(0, staged.rows,
                                  self._gather(staged.table, staged.source))
        self.ptr.copy_(staged.ptr)
        self.fill.copy_(staged.fill)

    def discard(self) -> None:
        """Drop the staged push: the bank stays as it was."""
        self._staged = None

    @property
    def has_staged(self) -> bool:
        """Whether a staged push waits for :meth:`commit`."""
        return self._staged is not None

    def _gather(self, table: Tensor, index: Tensor) -> Tensor:
        """``table[index]`` in the bank's dtype."""
        return table.index_select(0, index).to(self.dtype)

    def _finite_rows(self, table: Tensor) -> Tensor:
        """``(R,)`` bool: the row has no NaN/Inf, also after the cast.

        A row sum is NaN/Inf when an entry is (one cheap pass instead of an
        elementwise ``isfinite``; a finite row whose float32 sum overflows,
        beyond 1e38, counts as non-finite). A narrower bank dtype (float16)
        also needs every entry within its range.
        """
        finite = torch.isfinite(table.sum(dim=1, dtype=torch.float32))
        limit = torch.finfo(self.dtype).max
        if limit < torch.finfo(table.dtype).max:
            finite &= table.abs().amax(dim=1) <= limit
        return finite

    def _plan_push(self, class_ids: Tensor, table: Tensor,
                   index: Optional[Tensor]) -> StagedPush:
        """Destination rows and new pointers of a push (no write)."""
        device = self.features.device
        class_ids = class_ids.to(device=device, dtype=torch.long)
        table = table.detach().to(device=device)
        num_rows = class_ids.shape[0]
        if index is None:
            index = torch.arange(num_rows, device=device)
        else:
            index = index.to(device=device, dtype=torch.long)
        # non-finite rows form an extra group C that is never written
        finite = self._finite_rows(table)[index]
        groups = torch.where(finite, class_ids,
                             torch.full_like(class_ids, self.num_classes))
        group_counts = torch.bincount(groups, minlength=self.num_classes + 1)
        starts = torch.cumsum(group_counts, 0) - group_counts
        # position of every row among the rows of its group (arrival order)
        order = torch.argsort(groups, stable=True)
        pos = torch.empty_like(order)
        pos[order] = torch.arange(num_rows, device=device)
        pos -= starts[groups]
        counts = group_counts[:self.num_classes]
        capacity = self.capacity[class_ids]
        slots = (self.ptr[class_ids] + pos) % capacity
        rows = self.offsets[class_ids] + slots
        # only the last `capacity` finite rows of a class survive this push
        keep = finite & (pos >= counts[class_ids] - capacity)
        if not bool(keep.all()):
            kept = keep.nonzero(as_tuple=True)[0]
            rows, index = rows[kept], index[kept]
        return StagedPush(
            rows=rows,
            source=index,
            table=table,
            ptr=(self.ptr + counts) % self.capacity,
            fill=torch.minimum(self.fill + counts, self.capacity))

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
        if not is_int(num) or num <= 0:
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
        staged = self._staged
        fill = (self.fill if staged is None else staged.fill)[class_ids]
        uniform = torch.rand((class_ids.shape[0], num),
                             generator=generator,
                             device=device)
        # filled slots are [0, fill): the ring wraps only once it is full
        last = (fill - 1).clamp(min=0).unsqueeze(1)
        slots = torch.minimum((uniform * fill.unsqueeze(1)).long(), last)
        rows = (self.offsets[class_ids].unsqueeze(1) + slots).reshape(-1)
        if staged is None or not staged.rows.numel():
            feats = self.features.index_select(0, rows)
        else:
            # rows written by the staged push come from its table
            source = torch.full((self.features.shape[0], ),
                                -1,
                                dtype=torch.long,
                                device=device)
            source[staged.rows] = staged.source
            feats = self._gather_staged(rows, source[rows], staged.table)
        return feats.view(slots.shape + (self.feat_channels, )), fill > 0

    def _gather_staged(self,
                       rows: Tensor,
                       source: Tensor,
                       table: Tensor,
                       masked: Optional[bool] = None) -> Tensor:
        """Bank ``rows``, taken from ``table[source]`` where ``source >= 0``.

        ``masked`` (default: off the CPU) selects between two full gathers
        without a host-device synchronisation; otherwise, as on the CPU,
        where data-dependent sizes cost no sync, all rows are gathered from
        the bank in one ``index_select`` and only the few that this step's
        push rewrites are then taken from the table (an ``index_put`` of all
        rows costs several times an ``index_select``). Both give the same
        result.
        """
        staged = source >= 0
        if masked is None:
            masked = rows.device.type != 'cpu'
        if masked:
            return torch.where(
                staged.unsqueeze(1), self._gather(table, source.clamp(min=0)),
                self.features.index_select(0, rows))
        feats = self.features.index_select(0, rows)
        from_table = staged.nonzero(as_tuple=True)[0]
        feats.index_copy_(
            0, from_table,
            self._gather(table, source.index_select(0, from_table)))
        return feats

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

    def current_fill(self) -> Tensor:
        """``fill``, or the fill after the staged push when one waits."""
        return self.fill if self._staged is None else self._staged.fill

    def fill_ratio(self) -> Tensor:
        """Filled fraction of every queue, ``(C,)`` float32, for logging.

        A staged push counts as done (see :meth:`stage`).
        """
        return self.current_fill().float() / self.capacity.float()
