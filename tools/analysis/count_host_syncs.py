# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Count where one U2PL training step reads GPU data on the host.

On a GPU every such read (``bool(tensor)``, ``.item()``, ``.tolist()``,
``nonzero``, boolean-mask indexing, ...) is a host-device synchronisation:
the Python side waits until the GPU has finished all queued work, and the
GPU then idles while the next kernels are launched. This tool finds them on
any device, the CPU included, by watching the calls that would synchronise
on a GPU, and prints where they come from (file, line, function) and how
often one step makes them, for U2PL with and without the contrastive term.

On CUDA it also counts the real synchronisations with
``torch.cuda.set_sync_debug_mode('warn')``, which sees what the watched
calls cannot (e.g. synchronisations inside a single operator).

The step is ``model.train_step`` (data preprocessing, forward, backward,
optimizer step), past the warm-up, with CutMix on every batch. Optimizer
and logging code of mmengine may add host reads of their own; they are
listed under their call sites too.

Examples::

    python tools/analysis/count_host_syncs.py
    python tools/analysis/count_host_syncs.py --device cuda --crop 513 \
        --batch 4 --config configs/voc/u2pl_*_voc-classic-1464-513x513.py
"""
import argparse
import collections
import contextlib
import copy
import os.path as osp
import sys
import traceback
import warnings
from typing import Callable, Dict, Iterator, List, Tuple

import torch

if osp.dirname(osp.abspath(__file__)) not in sys.path:
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import (
    ROOT,  # noqa: E402
    add_step_arguments,
    build_bench_optim_wrapper,
    build_variant,
    fake_batch,
    load_bench_config,
    resolve_device,
    set_train_progress)

VARIANTS = ('u2pl-nocontrast', 'u2pl')
_TORCH_DIR = osp.dirname(torch.__file__)


def _is_bool_mask(index) -> bool:
    """Whether a ``__getitem__``/``__setitem__`` index holds a bool tensor
    (its result size depends on the data: a synchronisation on a GPU)."""
    items = index if isinstance(index, tuple) else (index, )
    return any(
        isinstance(item, torch.Tensor) and item.dtype == torch.bool
        for item in items)


def _short_path(path: str) -> str:
    if path.startswith(ROOT + osp.sep) and 'site-packages' not in path:
        return osp.relpath(path, ROOT)
    if 'site-packages' + osp.sep in path:
        return path.split('site-packages' + osp.sep, 1)[1]
    return path


def _call_site() -> Tuple[str, bool]:
    """The innermost caller outside torch and whether torch.optim made it.

    Returns:
        tuple[str, bool]: ``path:line (function)`` and True when the read
        comes from inside ``torch.optim``, whose step counters live on the
        CPU (unless ``capturable``/``fused``): no synchronisation there.
    """
    stack = [
        frame for frame in traceback.extract_stack()[:-1]
        if frame.filename != __file__
    ]
    from_optim = bool(stack) and stack[-1].filename.startswith(
        osp.join(_TORCH_DIR, 'optim'))
    for frame in reversed(stack):
        if not frame.filename.startswith(_TORCH_DIR):
            return (f'{_short_path(frame.filename)}:{frame.lineno} '
                    f'({frame.name})'), from_optim
    return '<unknown>', from_optim


class HostReadCounter:
    """Count the calls that read tensor data on the host, by call site.

    Within :meth:`watch`, these are counted (the calls that synchronise
    when the tensor lives on a GPU): ``bool()``, ``int()``, ``float()``,
    ``.item()``, ``.tolist()``, ``.numpy()``, ``nonzero`` /
    ``torch.nonzero`` / ``torch.where`` with one argument,
    ``masked_select``, ``torch.unique`` and indexing (read or write) with a
    boolean mask. A call made inside another watched call counts once.
    Reads made inside ``torch.optim`` are only tallied in
    ``optimizer_reads``: its step counters are CPU tensors, whose reads
    never synchronise (unless the optimizer is ``capturable`` or
    ``fused``).

    Example:
        >>> counter = HostReadCounter()
        >>> with counter.watch():
        ...     x = torch.arange(4)
        ...     _ = x[x > 1]  # boolean mask
        ...     _ = bool(x.any())
        >>> counter.total
        2
    """

    def __init__(self) -> None:
        #: ``(call site, kind) -> count``
        self.counts: Dict[Tuple[str, str], int] = collections.Counter()
        #: reads inside ``torch.optim`` (CPU step counters), not counted
        self.optimizer_reads = 0
        self._depth = 0

    @property
    def total(self) -> int:
        """All counted host reads."""
        return sum(self.counts.values())

    def _wrap(self,
              kind: str,
              fn: Callable,
              applies: Callable = None) -> Callable:

        def wrapper(*args, **kwargs):
            counted = self._depth == 0 and (applies is None
                                            or applies(*args, **kwargs))
            if counted:
                site, from_optim = _call_site()
                if from_optim:
                    self.optimizer_reads += 1
                else:
                    self.counts[(site, kind)] += 1
            self._depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1

        return wrapper

    @contextlib.contextmanager
    def watch(self) -> Iterator['HostReadCounter']:
        """Patch the watched calls for the duration of the block."""
        tensor = torch.Tensor
        patches: List[Tuple[object, str, Callable, Callable]] = []
        for name in ('__bool__', '__int__', '__float__', 'item', 'tolist',
                     'numpy', 'nonzero', 'masked_select'):
            patches.append((tensor, name, getattr(tensor, name), None))
        for name in ('nonzero', 'masked_select', 'unique'):
            patches.append((torch, name, getattr(torch, name), None))
        patches.append((torch, 'where', torch.where,
                        lambda *args, **kwargs: len(args) + len(kwargs) == 1))
        patches.append((tensor, '__getitem__', tensor.__getitem__,
                        lambda self, index: _is_bool_mask(index)))
        patches.append((tensor, '__setitem__', tensor.__setitem__,
                        lambda self, index, value: _is_bool_mask(index)))
        for owner, name, original, applies in patches:
            kind = name.strip('_') if owner is tensor else f'torch.{name}'
            if name in ('__getitem__', '__setitem__'):
                kind = 'boolean-mask ' + ('read' if name == '__getitem__' else
                                          'write')
            setattr(owner, name, self._wrap(kind, original, applies))
        try:
            yield self
        finally:
            for owner, name, original, _ in patches:
                setattr(owner, name, original)


def count_step(model, wrapper, batch, device) -> Tuple[HostReadCounter, int]:
    """Host reads of one ``train_step`` and, on CUDA, real syncs."""
    counter = HostReadCounter()
    real = -1
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            torch.cuda.set_sync_debug_mode('warn')
            try:
                model.train_step(copy.deepcopy(batch), wrapper)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        real = sum('synchroniz' in str(w.message) for w in caught)
    with counter.watch():
        model.train_step(copy.deepcopy(batch), wrapper)
    return counter, real


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_step_arguments(parser)
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision as tools/train.py --amp (fp16 with dynamic '
        'loss scaling on CUDA, bfloat16 on CPU)')
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    cfg = load_bench_config(args.config, device, crop=args.crop)
    set_train_progress(1, 100)
    batch = fake_batch('u2pl', cfg, args.batch, args.crop)
    totals = {}
    for variant in VARIANTS:
        model = build_variant(cfg, variant, device)
        wrapper = build_bench_optim_wrapper(cfg, model, device, amp=args.amp)
        model.train_step(copy.deepcopy(batch), wrapper)  # first-step work
        counter, real = count_step(model, wrapper, batch, device)
        totals[variant] = (counter.total, real)
        print(f'\n{variant} ({device}, AMP {"on" if args.amp else "off"}, '
              f'crop {args.crop}, {args.batch} + {args.batch} images): '
              f'{counter.total} host reads in one training step\n')
        print('| call site | host read | per step |')
        print('|---|---|---|')
        for (site, kind), num in sorted(counter.counts.items()):
            print(f'| {site} | {kind} | {num} |')
    print('\n| variant | host reads / step (watched calls) | '
          'synchronisations / step (CUDA sync debug mode) |')
    print('|---|---|---|')
    for variant, (total, real) in totals.items():
        real_text = str(real) if real >= 0 else 'CUDA only'
        print(f'| {variant} | {total} | {real_text} |')


if __name__ == '__main__':
    main()
