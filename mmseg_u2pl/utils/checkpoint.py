# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Safe loading of MMEngine checkpoints with ``torch.load(weights_only=True)``.

Since torch 2.6, :func:`torch.load` defaults to ``weights_only=True`` and
refuses every Python object that is not on an allow-list. MMEngine's
checkpoints hold more than tensors: the message hub stores
:class:`~mmengine.logging.HistoryBuffer` objects whose logs are numpy arrays,
and the logged metrics are numpy scalars. Resuming such a checkpoint then
fails inside MMEngine.

Instead of switching the safety off (``weights_only=False`` runs arbitrary
code from the file), :func:`register_checkpoint_safe_globals` adds the few
objects a real MMEngine checkpoint contains to torch's allow-list. Everything
else is still refused; :func:`load_checkpoint_safely` and
:func:`explain_unsafe_checkpoint` turn torch's refusal into a message that
names the file, the offending global and how to allow it if trusted.
Whether a loaded checkpoint fits the model is checked in
:mod:`mmseg_u2pl.utils.checkpoint_fit`.
"""
import inspect
import os.path as osp
import pickle
import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

SafeGlobal = Union[Callable, Tuple[Callable, str]]

# Numeric dtypes whose concrete ``numpy.dtypes.*DType`` classes must be
# allowed: unpickling a ``numpy.dtype`` ends with a BUILD on an instance of
# that class, which torch checks against the allow-list.
_NUMPY_DTYPE_NAMES = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8',
                      'uint16', 'uint32', 'uint64', 'float16', 'float32',
                      'float64', 'longdouble', 'complex64', 'complex128',
                      'clongdouble')

_REFUSAL_PREFIX = 'Refusing to load checkpoint'


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds an object outside the allow-list.

    Subclasses :class:`pickle.UnpicklingError`, the error torch raises, so
    existing ``except pickle.UnpicklingError`` handlers still catch it.
    """


def _history_buffer_statistic(obj: Any, name: str) -> Callable:
    """A restricted ``getattr`` for unpickling ``HistoryBuffer`` objects.

    ``HistoryBuffer`` pickles its statistics methods (``min``, ``max``,
    ``mean``, ``current`` and any registered with
    ``HistoryBuffer.register_statistics``) as ``getattr(HistoryBuffer,
    'min')``. Allowing the real :func:`getattr` would let a malicious file
    reach any attribute of any allowed object (and from there, arbitrary
    code), so the checkpoint's ``builtins.getattr`` is mapped to this
    function, which only returns plain functions defined on
    ``HistoryBuffer``.

    Args:
        obj (Any): Object whose attribute is requested.
        name (str): Attribute name.

    Returns:
        Callable: The statistics method ``HistoryBuffer.<name>``.
    """
    attr = None
    if (obj is HistoryBuffer and isinstance(name, str)
            and not name.startswith('_')):
        attr = inspect.getattr_static(obj, name, None)
    if not inspect.isfunction(attr):
        raise UnsafeCheckpointError(
            f'Refused builtins.getattr({obj!r}, {name!r}) while unpickling: '
            'mmseg_u2pl only allows getattr(HistoryBuffer, <statistics '
            'method>) as stored by mmengine\'s message hub.')
    return attr


def _numpy_reconstructors() -> Tuple[Callable, Callable]:
    """The functions numpy pickles arrays and scalars with.

    Taken from ``__reduce__`` so that the code does not depend on numpy's
    private module layout (``numpy.core`` in 1.x, ``numpy._core`` in 2.x).
    """
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    return reconstruct, scalar


def checkpoint_safe_globals() -> List[SafeGlobal]:
    """The allow-list of objects an MMEngine checkpoint may contain.

    Found by saving and loading real checkpoints (model state, optimizer
    state, parameter schedulers, message hub, meta): beside what torch allows
    by default, they hold ``HistoryBuffer``, numpy arrays, dtypes and scalars.
    numpy functions are listed under both their numpy 1.x
    (``numpy.core.multiarray``) and 2.x (``numpy._core.multiarray``) paths,
    so checkpoints written with either version load.

    Returns:
        list: Entries for :func:`torch.serialization.add_safe_globals`.
    """
    reconstruct, scalar = _numpy_reconstructors()
    safe_globals: List[SafeGlobal] = [HistoryBuffer, np.ndarray, np.dtype]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        safe_globals.append((reconstruct, f'{module}._reconstruct'))
        safe_globals.append((scalar, f'{module}.scalar'))
    for name in _NUMPY_DTYPE_NAMES:
        dtype_cls = type(np.dtype(name))
        if dtype_cls is not np.dtype:  # numpy < 1.25 has no dtype classes
            safe_globals.append(dtype_cls)
    safe_globals.append((_history_buffer_statistic, 'builtins.getattr'))
    return safe_globals


def register_checkpoint_safe_globals() -> List[SafeGlobal]:
    """Allow the objects of MMEngine checkpoints in ``torch.load``.

    Idempotent: torch keeps its allow-list in a set, so calling this again
    adds nothing. ``weights_only`` stays on; objects outside the list are
    still refused.

    Returns:
        list: The entries that were registered.
    """
    safe_globals = checkpoint_safe_globals()
    torch.serialization.add_safe_globals(safe_globals)
    return safe_globals


def _allowed_global_names() -> set:
    """Full names of the globals allowed by torch and by us."""
    names = set()
    for entry in torch.serialization.get_safe_globals():
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f'{entry.__module__}.{entry.__qualname__}')
    return names


def _offending_globals(path: Optional[str], error: BaseException) -> List[str]:
    """Best effort: the globals of ``path`` (or ``error``) not allowed."""
    names: List[str] = []
    if path is not None and osp.isfile(path):
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # not a zip checkpoint: fall back to the message
            found = []
        allowed = _allowed_global_names()
        names = [name for name in found if name not in allowed]
    if not names:
        match = re.search(
            r'(?:GLOBAL (\S+) was not an allowed global'
            r'|but got (<class [^>]+>)'
            r'|unrecognized function (.+?)(?:\n|$)'
            r'|Refused (builtins\.getattr\([^)]*\)))', str(error))
        if match:
            names = [next(g for g in match.groups() if g)]
    return names


def explain_unsafe_checkpoint(path: Optional[str],
                              error: BaseException) -> str:
    """A clear message for a checkpoint that ``weights_only`` refused.

    Args:
        path (str, optional): The checkpoint file, if known.
        error (BaseException): The error raised by :func:`torch.load`.

    Returns:
        str: Names the file and the offending global(s), and says how to
        allow them if the file is trusted.
    """
    names = _offending_globals(path, error)
    what = ', '.join(names) if names else 'an object (see the error below)'
    if any(name.startswith('builtins.getattr') for name in names):
        how = ('builtins.getattr is only allowed on HistoryBuffer, as '
               'anything else can run code; if you trust this file, load it '
               'with torch.load(path, weights_only=False) and re-save its '
               'tensors.')
    else:
        example = names[0] if names else 'the.offending.Class'
        how = ('If you trust this file, allow the object before loading, '
               f'e.g. torch.serialization.add_safe_globals([{example}]) (or '
               'the torch.serialization.safe_globals([...]) context '
               'manager).')
    detail = re.search(r'WeightsUnpickler error:\s*([^\n]+)', str(error))
    reason = detail.group(1) if detail else str(error)
    return (f'{_REFUSAL_PREFIX} {path!r}: it contains {what}, which is not '
            'on the allow-list of torch.load(weights_only=True) extended by '
            'mmseg_u2pl.utils.checkpoint.register_checkpoint_safe_globals(); '
            f'loading it could run code stored in the file. {how} '
            f'(torch: {reason})')


def is_weights_only_error(error: BaseException) -> bool:
    """Whether ``error`` is torch's ``weights_only`` refusal."""
    return isinstance(error, UnsafeCheckpointError) or (
        isinstance(error, pickle.UnpicklingError)
        and 'weights_only' in str(error).replace(' ', '_').lower())


@contextmanager
def refuse_unsafe_checkpoints(path: Optional[str] = None) -> Iterator[None]:
    """Re-raise torch's ``weights_only`` refusals with a clear message.

    Wrap code that loads checkpoints indirectly (e.g. ``runner.train()``
    resuming, ``runner.test()`` loading ``load_from``).

    Args:
        path (str, optional): The checkpoint the wrapped code loads, named in
            the message.

    Raises:
        UnsafeCheckpointError: Instead of torch's ``UnpicklingError``.
    """
    try:
        yield
    except pickle.UnpicklingError as error:
        if (not is_weights_only_error(error)
                or str(error).startswith(_REFUSAL_PREFIX)):
            raise  # not a refusal, or already explained by an inner guard
        raise UnsafeCheckpointError(explain_unsafe_checkpoint(
            path, error)) from error


def load_checkpoint_safely(
        path: str,
        map_location: Union[str, torch.device, None] = 'cpu') -> Any:
    """Load a checkpoint with ``weights_only=True`` and our allow-list.

    Args:
        path (str): Local checkpoint file.
        map_location (str | torch.device, optional): As in
            :func:`torch.load`. Defaults to ``'cpu'``.

    Returns:
        Any: The loaded checkpoint (usually a dict).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        UnsafeCheckpointError: If the file holds an object outside the
            allow-list; the message names the file and the object.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'Checkpoint file {path!r} does not exist: check the path.')
    register_checkpoint_safe_globals()
    with refuse_unsafe_checkpoints(path):
        return torch.load(path, map_location=map_location, weights_only=True)
