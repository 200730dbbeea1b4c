# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Random numbers drawn aside from the training's main random stream.

An optional branch of the model (U2PL's representation head and
contrastive loss) draws random numbers: its initialisation, its dropout
masks, its anchor and negative sampling. Drawn from the default generators,
they would shift everything drawn after them (CutMix boxes, the decode
head's dropout), so that turning the branch on would also change the
supervised warm-up and every later random choice, and an ablation with the
same seed would compare two different random histories. Inside
:func:`separate_random_stream` the default generators are reseeded from the
run's seed and a key (e.g. the branch's name and the iteration), and
restored afterwards: the main stream continues as if nothing had been drawn,
and the branch's own draws are reproducible (also after a resume, as they
depend only on the seed and the key).
"""
import hashlib
from contextlib import contextmanager
from typing import Iterator, Optional, Union

import torch
from mmengine.dist import get_rank, get_world_size

from ...utils.misc import train_progress


def derived_seed(*keys: Union[int, str]) -> int:
    """A 63-bit seed that depends only on the run's seed and ``keys``.

    The run's seed is ``torch.initial_seed()`` (what mmengine's
    ``randomness.seed`` set, per rank when ``diff_rank_seed=True``).

    Args:
        *keys (int | str): What the stream is for, e.g.
            ``('contrastive_loss', 1200)``.

    Returns:
        int: The seed.
    """
    text = repr((torch.initial_seed(), ) + tuple(keys)).encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, 'little') & (2**63 - 1)


def current_iteration() -> int:
    """The running train loop's iteration, -1 outside a loop."""
    cur_iter = train_progress()[0]
    return -1 if cur_iter is None else cur_iter


@contextmanager
def separate_random_stream(*keys: Union[int, str],
                           device: Optional[Union[str, torch.device]] = None,
                           per_rank: bool = False) -> Iterator[None]:
    """Draw the block's random numbers from a stream of their own.

    The CPU generator (and, for a CUDA ``device``, that device's generator)
    is seeded with :func:`derived_seed` of ``keys`` for the block and gets
    its previous state back afterwards. Cheap: the generators' states are
    host-side; nothing waits for the GPU.

    Args:
        *keys (int | str): Identify the stream (see :func:`derived_seed`).
        device (str | torch.device, optional): Device whose generator the
            block draws from besides the CPU's. Defaults to None (CPU only).
        per_rank (bool): In distributed training, key the stream on the
            process rank too, so that every rank draws differently even
            when mmengine's ``randomness.diff_rank_seed`` is off (its
            default: every rank then has the same run seed). With one
            process the stream is the same as without it. Defaults to
            False.

    Example:
        >>> with separate_random_stream('contrastive_loss', 1200,
        ...                             device=feats.device):
        ...     loss = contrastive_loss(feats, ...)
    """
    if per_rank and get_world_size() > 1:
        keys += ('rank', get_rank())
    seed = derived_seed(*keys)
    device = torch.device(device) if device is not None else None
    cuda_devices = []
    if device is not None and device.type == 'cuda':
        cuda_devices = [
            device.index
            if device.index is not None else torch.cuda.current_device()
        ]
    with torch.random.fork_rng(devices=cuda_devices):
        torch.default_generator.manual_seed(seed)
        for index in cuda_devices:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield
