# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Labeled/unlabeled lists of the embedded datasets (ToyShapes, ToyShapes21).

Every labeled set is a prefix of one seeded order of the training images,
repaired so that its smallest prefix shows every object class: the sets are
nested and each shows every class. Counts follow
:func:`split_utils.num_from_fraction`.
"""
from fractions import Fraction
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from split_utils import num_from_fraction, parse_fraction

#: Stream of the seed sequence ``(seed, stream, 0)`` that orders the images
#: (the images use streams 0 and 1).
SPLIT_LIST_STREAM = 2


def fraction_texts(fractions: Sequence[str]) -> List[str]:
    """Fractions as stripped strings (a single string is one fraction)."""
    if isinstance(fractions, str):
        fractions = [fractions]
    return [str(text).strip() for text in fractions]


def parse_fractions(fractions: Sequence[str]) -> List[Tuple[str, Fraction]]:
    """Parse labeled fractions such as ``'1/16'`` or ``'0.25'``.

    Each is read by :func:`split_utils.parse_fraction`.

    Args:
        fractions (Sequence[str]): Fractions of the training set to label.

    Returns:
        list[tuple[str, Fraction]]: ``(suffix, value)`` pairs, the suffix
        being the text with ``/`` replaced by ``-`` (``'1/16'`` ->
        ``'1-16'``).
    """
    fractions = fraction_texts(fractions)
    if len(fractions) == 0:
        raise ValueError('fractions must not be empty, e.g. 1/16, 1/8, 1')
    parsed, seen = [], {}
    for text in fractions:
        value = parse_fraction(text)
        if value in seen:
            raise ValueError(f'fractions {seen[value]!r} and {text!r} are '
                             'the same; list each fraction once')
        seen[value] = text
        parsed.append((text.replace('/', '-'), value))
    return parsed


def _cover_all_classes(order: np.ndarray,
                       num_labeled: int,
                       presence: np.ndarray,
                       classes: Optional[Sequence[str]] = None) -> np.ndarray:
    """Swap images into the labeled prefix until it shows every class.

    Args:
        order (np.ndarray): Random order of the training images; the first
            ``num_labeled`` form the smallest labeled set.
        num_labeled (int): Size of the smallest labeled set.
        presence (np.ndarray): ``(num_train, num_object_classes)`` bool, which
            object classes are visible in each image.
        classes (Sequence[str], optional): Class names, background first,
            for the error messages. Defaults to None (class indices).

    Returns:
        np.ndarray: The repaired order (a permutation of ``order``).
    """
    order = order.copy()
    for _ in range(presence.shape[1] + 1):
        members = presence[order[:num_labeled]]
        missing = ~members.any(axis=0)
        if not missing.any():
            return order
        absent = np.flatnonzero(~presence.any(axis=0))
        if absent.size:
            names = [
                classes[1 + c] if classes else f'class {1 + c}' for c in absent
            ]
            raise ValueError(f'class(es) {names} appear in no training image; '
                             'increase num_train')
        gains = presence[order[num_labeled:]][:, missing].sum(axis=1)
        incoming = num_labeled + int(np.argmax(gains))
        # Drop the member whose departure loses the fewest covered classes;
        # among ties the last one (the latest-drawn).
        holders = members.sum(axis=0)
        losses = (members & (holders == 1)).sum(axis=1)
        outgoing = int(np.flatnonzero(losses == losses.min())[-1])
        if gains.max() <= losses[outgoing]:
            break
        order[[outgoing, incoming]] = order[[incoming, outgoing]]
    raise ValueError(
        f'cannot show every class in a labeled set of {num_labeled} images; '
        'increase num_train or the smallest fraction')


def make_split_lists(
        presence: np.ndarray,
        fractions: Sequence[str],
        seed: int,
        classes: Optional[Sequence[str]] = None) -> Dict[str, List[int]]:
    """Nested labeled/unlabeled index lists, each showing every class.

    One seeded permutation of the training set is drawn, repaired so that its
    smallest prefix shows every object class, and every labeled set is a
    prefix of it: the sets are nested and all show every class.

    Args:
        presence (np.ndarray): ``(num_train, num_object_classes)`` bool.
        fractions (Sequence[str]): Labeled fractions, e.g. ``('1/16', '1')``.
        seed (int): Dataset seed.
        classes (Sequence[str], optional): Class names, background first,
            for the error messages. Defaults to None.

    Returns:
        dict[str, list[int]]: Sorted training indices per list name
        (``'labeled_1-16'``, ``'unlabeled_1-16'``, ...).
    """
    num_train = presence.shape[0]
    parsed = parse_fractions(fractions)
    rng = np.random.default_rng([seed, SPLIT_LIST_STREAM, 0])
    order = rng.permutation(num_train)
    smallest = min(num_from_fraction(num_train, value) for _, value in parsed)
    order = _cover_all_classes(order, smallest, presence, classes)
    lists = {}
    for suffix, value in parsed:
        num_labeled = num_from_fraction(num_train, value)
        lists[f'labeled_{suffix}'] = sorted(order[:num_labeled].tolist())
        lists[f'unlabeled_{suffix}'] = sorted(order[num_labeled:].tolist())
    return lists


def expected_split_counts(arguments: dict) -> Dict[str, int]:
    """Lines of every split file that ``arguments`` ask for."""
    num_train = arguments['num_train']
    counts = dict(train=num_train, val=arguments['num_val'])
    for suffix, value in parse_fractions(arguments['fractions']):
        num_labeled = num_from_fraction(num_train, value)
        counts[f'labeled_{suffix}'] = num_labeled
        counts[f'unlabeled_{suffix}'] = num_train - num_labeled
    return counts
