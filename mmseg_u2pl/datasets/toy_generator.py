# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Generator of the embedded toy dataset ``ToyShapes``.

Small RGB images of textured shapes on a cluttered background, with per-pixel
labels, written in the usual mmseg on-disk layout together with the labeled /
unlabeled split lists that semi-supervised training needs::

    <out_dir>/images/train_00000.png      RGB uint8
    <out_dir>/labels/train_00000.png      uint8 class index per pixel ('L')
    <out_dir>/splits/train.txt            all training names, sorted
    <out_dir>/splits/val.txt
    <out_dir>/splits/labeled_1-16.txt     one pair per fraction
    <out_dir>/splits/unlabeled_1-16.txt
    <out_dir>/meta.json                   version, arguments, classes, counts

The task is built so that scarce labels hurt. Each object class has a
preferred hue, but the hues of neighbouring classes overlap (a colour-only
pixel classifier trained on all labels gets about two thirds of the object
pixels right), so the class has to be settled by the object's *shape*.
Textures are drawn independently of the class, the background can take any
colour (weakly saturated) and carries clutter (thin lines, blobs, specks) in
object-like colours,
objects vary widely in size, rotation and aspect ratio, and they occlude each
other (the label follows what is visible).

Only numpy and PIL are used (no torch): the generator runs anywhere, fast.
Each image is seeded from ``(seed, split, index)``, so the output does not
depend on generation order and the same arguments give byte-identical files.
"""
import colorsys
import json
import math
import os
import os.path as osp
import re
import time
from fractions import Fraction
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

GENERATOR_VERSION = '2.2'

CLASSES = ('background', 'disk', 'square', 'triangle', 'ring', 'cross')
PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25],
           [0, 130, 200], [245, 130, 48]]
DEFAULT_FRACTIONS = ('1/16', '1/8', '1/4', '1/2', '1')
# 128 training images: 1/16 of the labels is 8 images, few enough that a
# network trained from scratch clearly misses the other 120 (measured in the
# README); the validation set keeps 256 images for a stable mIoU.
DEFAULT_NUM_TRAIN = 128
DEFAULT_NUM_VAL = 256

# Streams of the seed sequence ``(seed, stream, index)``.
SPLIT_STREAMS = {'train': 0, 'val': 1}
_SPLIT_LIST_STREAM = 2

# Object and scene statistics (sizes in pixels unless noted).
MIN_OBJECT_SIZE = 16.
MAX_OBJECT_SIZE_RATIO = 0.5  # of the image side
MAX_ASPECT = 1.5
MAX_OBJECTS = 6
MIN_OBJECT_CONTRAST = 48.  # mean RGB distance to what the object covers
TEXTURES = ('plain', 'stripes', 'dots', 'checker', 'gradient')
# Each object class has a preferred hue; the spread makes neighbouring classes
# overlap, so colour is a weak cue and shape has to settle the class.
CLASS_HUES = {1: 0.0, 2: 0.2, 3: 0.4, 4: 0.6, 5: 0.8}
HUE_SPREAD = 0.1
TEXTURE_CONTRAST = (0.15, 0.5)  # share of a full colour change

_OWN_IMAGE = re.compile(r'^(train|val)_\d+\.png$')
_OWN_SPLIT = re.compile(r'^(train|val|(un)?labeled_[\w.\-]+)\.txt$')


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------
def _random_colour(rng: np.random.Generator,
                   hue: Optional[float] = None,
                   spread: float = HUE_SPREAD) -> np.ndarray:
    """A random RGB colour, around ``hue`` (in [0, 1)) when one is given.

    Without a hue the colour is weakly saturated (backgrounds). With one, the
    hue is drawn from a normal distribution of std ``spread`` (default
    :data:`HUE_SPREAD`) around it, with random saturation and value.
    """
    if hue is None:  # backgrounds: any hue, weakly saturated
        rgb = colorsys.hsv_to_rgb(
            rng.uniform(0., 1.), rng.uniform(0., 0.35),
            rng.uniform(0.25, 0.95))
        return np.asarray(rgb) * 255.
    h = (hue + rng.normal(0., spread)) % 1.
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(0.5, 1.), rng.uniform(0.5, 1.))
    return np.asarray(rgb) * 255.


def _texture(rng: np.random.Generator,
             ys: np.ndarray,
             xs: np.ndarray,
             img_size: int,
             hue: Optional[float] = None,
             kind: Optional[str] = None,
             contrast_range: Tuple[float, float] = TEXTURE_CONTRAST,
             period_range: Optional[Tuple[float, float]] = None,
             spread: float = HUE_SPREAD) -> np.ndarray:
    """Colour the points ``(ys, xs)`` with a random two-colour texture.

    By default (the ToyShapes objects) the texture family and its
    parameters do not depend on what is drawn; a dataset whose classes
    differ in texture passes ``kind`` and a stronger ``contrast_range``.

    Args:
        rng (np.random.Generator): Random stream of the image.
        ys (np.ndarray): Row coordinates, any shape.
        xs (np.ndarray): Column coordinates, same shape as ``ys``.
        img_size (int): Image side, scales the gradient.
        hue (float, optional): Preferred hue of the colours (objects and
            clutter); None for uniform colours (backgrounds).
        kind (str, optional): One of :data:`TEXTURES`; None draws one.
        contrast_range (tuple[float, float]): Range of the second colour's
            share of a full colour change. Defaults to
            :data:`TEXTURE_CONTRAST`.
        period_range (tuple[float, float], optional): Range of the pattern
            period in pixels for stripes, dots and checker; None uses each
            family's own range (3-12, dots 4-10).
        spread (float): Hue spread of :func:`_random_colour`.

    Returns:
        np.ndarray: Colours of shape ``ys.shape + (3, )``, float32.
    """
    if kind is None:
        kind = TEXTURES[rng.integers(len(TEXTURES))]
    elif kind not in TEXTURES:
        raise ValueError(f'texture {kind!r} is not one of {TEXTURES}')
    colour_a = _random_colour(rng, hue, spread)
    # The second colour lies part-way towards another random colour: texture
    # edges stay weaker, on average, than the outlines that carry the class.
    contrast = rng.uniform(*contrast_range)
    colour_b = colour_a + contrast * (
        _random_colour(rng, hue, spread) - colour_a)
    angle = rng.uniform(0., math.pi)
    along = xs * math.cos(angle) + ys * math.sin(angle)
    across = -xs * math.sin(angle) + ys * math.cos(angle)
    if kind == 'plain':
        weight = np.zeros_like(along)
    elif kind == 'stripes':
        period = rng.uniform(*(period_range or (3., 12.)))
        duty = rng.uniform(0.3, 0.7)
        weight = np.mod(along + rng.uniform(0., period), period) < (
            duty * period)
    elif kind == 'dots':
        period = rng.uniform(*(period_range or (4., 10.)))
        radius = rng.uniform(0.2, 0.4) * period
        du = np.mod(along, period) - period / 2
        dv = np.mod(across, period) - period / 2
        weight = du * du + dv * dv <= radius * radius
    elif kind == 'checker':
        period = rng.uniform(*(period_range or (3., 12.)))
        weight = (np.floor(along / period) + np.floor(across / period)) % 2
    else:  # gradient
        span = rng.uniform(0.5, 1.5) * img_size
        weight = np.clip((along - rng.uniform(-0.5, 1.) * img_size) / span, 0.,
                         1.)
    weight = weight.astype(np.float32)[..., None]
    return (colour_a + weight * (colour_b - colour_a)).astype(np.float32)


def _clutter_hue(rng: np.random.Generator,
                 hues: Optional[Sequence[float]] = None) -> float:
    """Clutter takes the hue of a random object class (a distractor).

    ``hues`` are the object hues to choose from; None uses
    :data:`CLASS_HUES`.
    """
    if hues is None:
        hues = [CLASS_HUES[c] for c in range(1, len(CLASSES))]
    return hues[int(rng.integers(0, len(hues)))]


def _window(cy: float, cx: float, radius: float,
            img_size: int) -> Optional[Tuple[slice, slice]]:
    """Slices of the image covering a disk of ``radius`` around a point."""
    y0, y1 = max(0, int(cy - radius)), min(img_size, int(cy + radius) + 2)
    x0, x1 = max(0, int(cx - radius)), min(img_size, int(cx + radius) + 2)
    if y0 >= y1 or x0 >= x1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _shape_frame(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray,
                 cy: float, cx: float,
                 size: float) -> Tuple[np.ndarray, np.ndarray]:
    """Coordinates in the object's own frame, unit radius = ``size / 2``.

    Applies a random rotation and a random aspect distortion.
    """
    angle = rng.uniform(0., 2 * math.pi)
    aspect = math.exp(rng.uniform(-math.log(MAX_ASPECT), math.log(MAX_ASPECT)))
    half_u = size / 2 * math.sqrt(aspect)
    half_v = size / 2 / math.sqrt(aspect)
    dy, dx = ys - cy, xs - cx
    u = (dx * math.cos(angle) + dy * math.sin(angle)) / half_u
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / half_v
    return u, v


def _polygon_mask(u: np.ndarray, v: np.ndarray, sides: int,
                  apothem: float) -> np.ndarray:
    """Inside a regular polygon with one vertex up, ``apothem`` from the
    centre to each side (object-frame coordinates)."""
    inside = np.ones(u.shape, dtype=bool)
    for k in range(sides):
        phi = -math.pi / 2 + 2 * math.pi * k / sides
        inside &= u * math.cos(phi) + v * math.sin(phi) <= apothem
    return inside


def _box(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float,
         v1: float) -> np.ndarray:
    """Inside the axis-aligned box ``[u0, u1] x [v0, v1]``."""
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


#: Outlines :func:`shape_mask` draws. The ToyShapes classes use the first
#: five, ToyShapes21 the first eight; the rest are the outlines of the
#: backbone's pretraining task, which no target class uses.
SHAPES = ('disk', 'square', 'triangle', 'ring', 'cross', 'star', 'bar',
          'crescent', 'pentagon', 'hexagon', 'semidisk', 'frame', 'ell', 'tee',
          'arrow', 'double-disk')


def shape_mask(rng: np.random.Generator, name: str, u: np.ndarray,
               v: np.ndarray) -> np.ndarray:
    """Pixels inside the outline ``name`` given object-frame coordinates.

    Sizes are chosen so that all shapes cover a similar area for the same
    nominal size (size must not give the class away).

    Args:
        rng (np.random.Generator): Random stream (ring, cross and crescent
            draw their thickness).
        name (str): One of :data:`SHAPES`.
        u (np.ndarray): Object-frame coordinates (:func:`_shape_frame`).
        v (np.ndarray): Same shape as ``u``.

    Returns:
        np.ndarray: Bool mask of the shape of ``u``.
    """
    au, av = np.abs(u), np.abs(v)
    r2 = u * u + v * v
    if name == 'disk':
        return r2 <= 0.85 * 0.85
    if name == 'square':
        return np.maximum(au, av) <= 0.75
    if name == 'triangle':
        circumradius = 1.3
        return _polygon_mask(u, v, 3, circumradius / 2)
    if name == 'ring':
        inner = rng.uniform(0.45, 0.65)
        return (r2 <= 1.) & (r2 >= inner * inner)
    if name == 'cross':
        arm = rng.uniform(0.22, 0.35)
        return ((au <= arm) & (av <= 1.05)) | ((av <= arm) & (au <= 1.05))
    if name == 'star':  # five points, inner radius 0.45 of the outer
        theta = np.arctan2(v, u) + math.pi / 2
        phase = np.abs(np.mod(theta, 2 * math.pi / 5) - math.pi / 5)
        radius = 0.5 + 0.6 * phase / (math.pi / 5)
        return np.sqrt(r2) <= radius
    if name == 'bar':
        return (au <= 1.2) & (av <= 0.36)
    if name == 'crescent':
        shift = rng.uniform(0.35, 0.5)
        return (r2 <= 1.) & ((u - shift)**2 + v * v >= 0.8 * 0.8)
    if name == 'pentagon':
        return _polygon_mask(u, v, 5, 0.75)
    if name == 'hexagon':
        return _polygon_mask(u, v, 6, 0.78)
    if name == 'semidisk':
        return (r2 <= 1.15 * 1.15) & (v >= -0.25)
    if name == 'frame':
        return (np.maximum(au, av) <= 0.9) & (np.maximum(au, av) >= 0.55)
    if name == 'ell':
        return _box(u, v, -0.8, -0.25, -0.9, 0.9) | _box(
            u, v, -0.8, 0.8, 0.35, 0.9)
    if name == 'tee':
        return _box(u, v, -0.9, 0.9, -0.9, -0.35) | _box(
            u, v, -0.28, 0.28, -0.9, 0.9)
    if name == 'arrow':
        head = (u >= 0.1) & (u <= 1.0) & (av <= 1.0 - u)
        return head | _box(u, v, -1.0, 0.1, -0.3, 0.3)
    if name == 'double-disk':
        return ((u - 0.5)**2 + v * v <= 0.55 * 0.55) | ((u + 0.5)**2 + v * v
                                                        <= 0.55 * 0.55)
    raise ValueError(f'shape {name!r} is not one of {SHAPES}')


def _draw_clutter(rng: np.random.Generator,
                  canvas: np.ndarray,
                  grid_y: np.ndarray,
                  grid_x: np.ndarray,
                  hues: Optional[Sequence[float]] = None) -> None:
    """Background clutter: thin lines, small irregular blobs and specks.

    Clutter uses the same colours and textures as objects and stays label 0.
    ``hues`` are the object hues it takes (None: :data:`CLASS_HUES`).
    """
    img_size = canvas.shape[0]
    for _ in range(rng.integers(0, 5)):  # thin lines
        cy, cx = rng.uniform(0., img_size, size=2)
        angle = rng.uniform(0., math.pi)
        half_len = rng.uniform(0.1, 0.4) * img_size
        half_width = rng.uniform(0.3, 0.8)
        win = _window(cy, cx, half_len + 1, img_size)
        if win is None:
            continue
        dy, dx = grid_y[win] - cy, grid_x[win] - cx
        along = dx * math.cos(angle) + dy * math.sin(angle)
        across = -dx * math.sin(angle) + dy * math.cos(angle)
        mask = (np.abs(along) <= half_len) & (np.abs(across) <= half_width)
        canvas[win][mask] = _random_colour(rng, _clutter_hue(rng, hues))
    for _ in range(rng.integers(0, 5)):  # irregular blobs
        cy, cx = rng.uniform(0., img_size, size=2)
        base = rng.uniform(1.5, 3.)
        win = _window(cy, cx, 1.8 * base + 1, img_size)
        if win is None:
            continue
        dy, dx = grid_y[win] - cy, grid_x[win] - cx
        theta = np.arctan2(dy, dx)
        radius = base * np.ones_like(theta)
        for harmonic in (2, 3, 5):
            radius += base * rng.uniform(
                0.1,
                0.25) * np.cos(harmonic * theta + rng.uniform(0., 2 * math.pi))
        mask = dy * dy + dx * dx <= radius * radius
        ys, xs = grid_y[win][mask], grid_x[win][mask]
        canvas[win][mask] = _texture(rng, ys, xs, img_size,
                                     _clutter_hue(rng, hues))
    num_specks = rng.integers(0, 30)
    ys = rng.integers(0, img_size, size=num_specks)
    xs = rng.integers(0, img_size, size=num_specks)
    canvas[ys, xs] = rng.uniform(0., 255., size=(num_specks, 3))


def _cluttered_background(
    rng: np.random.Generator,
    img_size: int,
    hues: Optional[Sequence[float]] = None
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured, cluttered background and its pixel grid.

    Returns:
        tuple[np.ndarray, np.ndarray, np.ndarray]: The float32 canvas
        ``(H, W, 3)`` and the row and column grids ``(H, W)``.
    """
    grid_y, grid_x = np.mgrid[0:img_size, 0:img_size].astype(np.float32)
    canvas = _texture(rng, grid_y, grid_x, img_size)
    _draw_clutter(rng, canvas, grid_y, grid_x, hues)
    return canvas, grid_y, grid_x


def _paint_object(
    rng: np.random.Generator, canvas: np.ndarray, grid_y: np.ndarray,
    grid_x: np.ndarray, shape: str, size: float, cy: float, cx: float,
    paint: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> Optional[Tuple[Tuple[slice, slice], np.ndarray]]:
    """Draw one object over ``canvas`` (occluding what it covers).

    The object is rotated and stretched at random (:func:`_shape_frame`);
    ``paint(ys, xs)`` colours its pixels and is called again (up to four
    times) while the object's mean colour stays closer than
    :data:`MIN_OBJECT_CONTRAST` to what it covers.

    Returns:
        tuple | None: The window and the object's mask inside it (to write
        the label), or None when the object falls outside the image.
    """
    img_size = canvas.shape[0]
    win = _window(cy, cx, 0.75 * MAX_ASPECT * size, img_size)
    if win is None:
        return None
    ys, xs = grid_y[win], grid_x[win]
    u, v = _shape_frame(rng, ys, xs, cy, cx, size)
    mask = shape_mask(rng, shape, u, v)
    if not mask.any():
        return None
    ys, xs = ys[mask], xs[mask]
    covered = canvas[win][mask].mean(axis=0)
    for _ in range(4):  # keep objects visible against what they cover
        colours = paint(ys, xs)
        if np.linalg.norm(colours.mean(axis=0) -
                          covered) >= MIN_OBJECT_CONTRAST:
            break
    canvas[win][mask] = colours
    return win, mask


def _add_noise(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Gaussian pixel noise of random std (3-10), as a uint8 image."""
    noise_std = rng.uniform(3., 10.)
    canvas += rng.normal(0., noise_std, size=canvas.shape).astype(np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def render_sample(rng: np.random.Generator,
                  img_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one image and its label map.

    Args:
        rng (np.random.Generator): Random stream of this image.
        img_size (int): Side of the square image in pixels.

    Returns:
        tuple[np.ndarray, np.ndarray]: RGB image ``(H, W, 3)`` and label map
        ``(H, W)``, both uint8; labels index :data:`CLASSES`.
    """
    canvas, grid_y, grid_x = _cluttered_background(rng, img_size)
    label = np.zeros((img_size, img_size), dtype=np.uint8)
    max_size = max(MIN_OBJECT_SIZE, MAX_OBJECT_SIZE_RATIO * img_size)
    for _ in range(rng.integers(1, MAX_OBJECTS + 1)):
        class_id = int(rng.integers(1, len(CLASSES)))
        size = rng.uniform(MIN_OBJECT_SIZE, max_size)
        cy, cx = rng.uniform(0., img_size, size=2)
        hue = CLASS_HUES[class_id]
        drawn = _paint_object(
            rng,
            canvas,
            grid_y,
            grid_x,
            CLASSES[class_id],
            size,
            cy,
            cx,
            lambda ys, xs, hue=hue: _texture(rng, ys, xs, img_size, hue))
        if drawn is not None:
            label[drawn[0]][drawn[1]] = class_id
    return _add_noise(rng, canvas), label


# ---------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------
def parse_fractions(fractions: Sequence[str]) -> List[Tuple[str, Fraction]]:
    """Parse labeled fractions such as ``'1/16'`` or ``'0.25'``.

    Args:
        fractions (Sequence[str]): Fractions of the training set to label.

    Returns:
        list[tuple[str, Fraction]]: ``(suffix, value)`` pairs, the suffix
        being the text with ``/`` replaced by ``-`` (``'1/16'`` ->
        ``'1-16'``).
    """
    fractions = _fraction_texts(fractions)
    if len(fractions) == 0:
        raise ValueError('fractions must not be empty, e.g. '
                         f"{', '.join(DEFAULT_FRACTIONS)}")
    parsed, seen = [], {}
    for text in fractions:
        try:
            value = Fraction(text)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f'fraction {text!r} is not a number such as '
                             "'1/16' or '0.25'") from None
        if not 0 < value <= 1:
            raise ValueError(f'fraction {text!r} must lie in (0, 1]')
        if value in seen:
            raise ValueError(f'fractions {seen[value]!r} and {text!r} are '
                             'the same; list each fraction once')
        seen[value] = text
        parsed.append((text.replace('/', '-'), value))
    return parsed


def labeled_count(num_train: int, fraction: Fraction) -> int:
    """``round(num_train * fraction)`` (halves rounded up), at least 1."""
    return max(1, math.floor(num_train * fraction + Fraction(1, 2)))


def _cover_all_classes(order: np.ndarray,
                       num_labeled: int,
                       presence: np.ndarray,
                       classes: Sequence[str] = CLASSES) -> np.ndarray:
    """Swap images into the labeled prefix until it shows every class.

    Args:
        order (np.ndarray): Random order of the training images; the first
            ``num_labeled`` form the smallest labeled set.
        num_labeled (int): Size of the smallest labeled set.
        presence (np.ndarray): ``(num_train, num_object_classes)`` bool, which
            object classes are visible in each image.
        classes (Sequence[str]): Class names, background first (for the
            error messages). Defaults to :data:`CLASSES`.

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
            names = [classes[1 + c] for c in absent]
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


def make_split_lists(presence: np.ndarray,
                     fractions: Sequence[str],
                     seed: int,
                     classes: Sequence[str] = CLASSES) -> Dict[str, List[int]]:
    """Nested labeled/unlabeled index lists, each showing every class.

    One seeded permutation of the training set is drawn, repaired so that its
    smallest prefix shows every object class, and every labeled set is a
    prefix of it: the sets are nested and all show every class.

    Args:
        presence (np.ndarray): ``(num_train, num_object_classes)`` bool.
        fractions (Sequence[str]): Labeled fractions, e.g. ``('1/16', '1')``.
        seed (int): Dataset seed.
        classes (Sequence[str]): Class names, background first. Defaults
            to :data:`CLASSES`.

    Returns:
        dict[str, list[int]]: Sorted training indices per list name
        (``'labeled_1-16'``, ``'unlabeled_1-16'``, ...).
    """
    num_train = presence.shape[0]
    parsed = parse_fractions(fractions)
    rng = np.random.default_rng([seed, _SPLIT_LIST_STREAM, 0])
    order = rng.permutation(num_train)
    smallest = min(labeled_count(num_train, value) for _, value in parsed)
    order = _cover_all_classes(order, smallest, presence, classes)
    lists = {}
    for suffix, value in parsed:
        num_labeled = labeled_count(num_train, value)
        lists[f'labeled_{suffix}'] = sorted(order[:num_labeled].tolist())
        lists[f'unlabeled_{suffix}'] = sorted(order[num_labeled:].tolist())
    return lists


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------
def sample_names(split: str, num: int) -> List[str]:
    """File stems of a split: ``train_00000``, ``train_00001``, ..."""
    width = max(5, len(str(num - 1)))
    return [f'{split}_{i:0{width}d}' for i in range(num)]


def _expected_files(out_dir: str, meta: dict) -> List[str]:
    args = meta['arguments']
    files = [osp.join(out_dir, 'meta.json')]
    for split in SPLIT_STREAMS:
        for name in sample_names(split, args[f'num_{split}']):
            files.append(osp.join(out_dir, 'images', name + '.png'))
            files.append(osp.join(out_dir, 'labels', name + '.png'))
    for list_name in meta['split_counts']:
        files.append(osp.join(out_dir, 'splits', list_name + '.txt'))
    return files


def _write_samples(spec: 'DatasetSpec', out_dir: str, split: str,
                   names: Sequence[str], seed: int,
                   img_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Render and save the images and labels of one split.

    Returns:
        tuple[np.ndarray, np.ndarray]: Which object classes each image shows
        ``(N, num_classes - 1)`` and the pixel count of each class.
    """
    num_classes = len(spec.classes)
    presence = np.zeros((len(names), num_classes - 1), dtype=bool)
    pixel_counts = np.zeros(num_classes, dtype=np.int64)
    for index, name in enumerate(names):
        rng = np.random.default_rng([seed, SPLIT_STREAMS[split], index])
        image, label = spec.render(rng, img_size)
        Image.fromarray(image).save(osp.join(out_dir, 'images', name + '.png'))
        Image.fromarray(label).save(osp.join(out_dir, 'labels', name + '.png'))
        counts = np.bincount(label.ravel(), minlength=num_classes)
        pixel_counts += counts
        presence[index] = counts[1:] > 0
    return presence, pixel_counts


def _write_list(path: str, names: Sequence[str]) -> None:
    with open(path, 'w', newline='\n') as f:
        f.write(''.join(name + '\n' for name in names))


def _remove_own_files(out_dir: str) -> None:
    """Delete only files this generator writes (others are left alone)."""
    for sub, pattern in (('images', _OWN_IMAGE), ('labels', _OWN_IMAGE),
                         ('splits', _OWN_SPLIT)):
        folder = osp.join(out_dir, sub)
        if osp.isdir(folder):
            for name in os.listdir(folder):
                if pattern.match(name):
                    os.remove(osp.join(folder, name))
    if osp.exists(osp.join(out_dir, 'meta.json')):
        os.remove(osp.join(out_dir, 'meta.json'))


def _read_meta(out_dir: str) -> Optional[dict]:
    path = osp.join(out_dir, 'meta.json')
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _describe_difference(old_meta: dict, arguments: dict, version: str) -> str:
    """``'num_train 48 (on disk) vs 40 (requested), ...'``."""
    old_args = old_meta.get('arguments') or {}
    diffs = [
        f'{key} {old_args.get(key)!r} (on disk) vs {value!r} (requested)'
        for key, value in arguments.items() if old_args.get(key) != value
    ]
    if old_meta.get('generator_version') != version:
        diffs.append(f"generator version {old_meta.get('generator_version')!r}"
                     f' (on disk) vs {version!r} (this code)')
    return ', '.join(diffs)


def _check_arguments(num_train: int, num_val: int, img_size: int,
                     seed: int) -> None:
    for name, value, low in (('num_train', num_train, 1),
                             ('num_val', num_val, 1), ('img_size', img_size,
                                                       16), ('seed', seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f'{name} must be an int, got {value!r}')
        if value < low:
            raise ValueError(f'{name} must be >= {low}, got {value}')


def _summary(out_dir: str, meta: dict, reused: bool, seconds: float) -> dict:
    return dict(
        out_dir=out_dir,
        reused=reused,
        time_s=round(seconds, 3),
        classes=list(meta['classes']),
        split_counts=dict(meta['split_counts']),
        class_pixel_freq_train=dict(meta['class_pixel_freq_train']),
        arguments=dict(meta['arguments']))


class DatasetSpec(NamedTuple):
    """What distinguishes one embedded dataset from another.

    Attributes:
        generator (str): Module that defines the dataset (``meta.json``).
        version (str): Version of its drawing; a dataset on disk from
            another version is regenerated, never reused.
        classes (tuple[str, ...]): Class names, background first.
        palette (list[list[int]]): One RGB colour per class.
        render (Callable): ``render(rng, img_size) -> (image, label)``.
    """
    generator: str
    version: str
    classes: Tuple[str, ...]
    palette: List[List[int]]
    render: Callable[[np.random.Generator, int], Tuple[np.ndarray, np.ndarray]]


TOY_SPEC = DatasetSpec('mmseg_u2pl.datasets.toy_generator', GENERATOR_VERSION,
                       CLASSES, PALETTE, render_sample)


def generate_dataset(spec: DatasetSpec,
                     out_dir: str,
                     num_train: int,
                     num_val: int,
                     img_size: int,
                     seed: int,
                     fractions: Sequence[str],
                     overwrite: bool = False) -> dict:
    """Write the embedded dataset ``spec`` to ``out_dir``.

    Re-running with the same arguments on a complete dataset returns at once
    without rewriting anything. See :func:`generate_toy_dataset` for the
    arguments and the returned summary.
    """
    start = time.perf_counter()
    _check_arguments(num_train, num_val, img_size, seed)
    fraction_texts = _fraction_texts(fractions)
    parse_fractions(fraction_texts)
    arguments = dict(
        num_train=int(num_train),
        num_val=int(num_val),
        img_size=int(img_size),
        seed=int(seed),
        fractions=fraction_texts)

    old_meta = _read_meta(out_dir)
    if old_meta is not None and (old_meta.get('generator') == spec.generator
                                 and old_meta.get('generator_version')
                                 == spec.version
                                 and old_meta.get('arguments') == arguments):
        if all(osp.isfile(f) for f in _expected_files(out_dir, old_meta)):
            return _summary(out_dir, old_meta, True,
                            time.perf_counter() - start)
        # Same arguments but incomplete: regenerating is harmless.
    elif osp.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        if old_meta is None:
            what = 'is not empty and has no readable meta.json'
        elif old_meta.get('generator') != spec.generator:
            what = (f"holds a dataset of {old_meta.get('generator')!r}, not "
                    f'of {spec.generator!r}')
        else:
            what = ('holds a toy dataset generated with other arguments: ' +
                    _describe_difference(old_meta, arguments, spec.version))
        raise FileExistsError(
            f'Output directory {out_dir!r} {what}. Pass --overwrite '
            '(overwrite=True) to replace it, or choose another --out.')
    _remove_own_files(out_dir)

    for sub in ('images', 'labels', 'splits'):
        os.makedirs(osp.join(out_dir, sub), exist_ok=True)
    names, presence, pixel_counts = {}, None, None
    for split, num in (('train', num_train), ('val', num_val)):
        names[split] = sample_names(split, num)
        split_presence, split_counts = _write_samples(spec, out_dir, split,
                                                      names[split], seed,
                                                      img_size)
        if split == 'train':
            presence, pixel_counts = split_presence, split_counts

    lists = {split: list(range(len(names[split]))) for split in names}
    lists.update(
        make_split_lists(presence, arguments['fractions'], seed, spec.classes))
    split_counts = {}
    for list_name, indices in lists.items():
        split = 'val' if list_name == 'val' else 'train'
        _write_list(
            osp.join(out_dir, 'splits', list_name + '.txt'),
            [names[split][i] for i in indices])
        split_counts[list_name] = len(indices)

    freq = pixel_counts / max(1, pixel_counts.sum())
    meta = dict(
        generator=spec.generator,
        generator_version=spec.version,
        arguments=arguments,
        classes=list(spec.classes),
        palette=spec.palette,
        split_counts=split_counts,
        class_pixel_freq_train={
            name: round(float(f), 6)
            for name, f in zip(spec.classes, freq)
        })
    # meta.json last: its presence marks a complete dataset.
    tmp_path = osp.join(out_dir, 'meta.json.tmp')
    with open(tmp_path, 'w', newline='\n') as f:
        json.dump(meta, f, indent=2)
        f.write('\n')
    os.replace(tmp_path, osp.join(out_dir, 'meta.json'))
    return _summary(out_dir, meta, False, time.perf_counter() - start)


def generate_toy_dataset(out_dir: str,
                         num_train: int = DEFAULT_NUM_TRAIN,
                         num_val: int = DEFAULT_NUM_VAL,
                         img_size: int = 96,
                         seed: int = 0,
                         fractions: Sequence[str] = DEFAULT_FRACTIONS,
                         overwrite: bool = False) -> dict:
    """Write the ToyShapes dataset to ``out_dir``.

    Re-running with the same arguments on a complete dataset returns at once
    without rewriting anything.

    Args:
        out_dir (str): Dataset root (becomes the config's ``data_root``).
        num_train (int): Training images. Defaults to 128.
        num_val (int): Validation images. Defaults to 256.
        img_size (int): Side of the square images. Defaults to 96.
        seed (int): Seed of everything. Defaults to 0.
        fractions (Sequence[str]): Labeled fractions of the training set; one
            ``labeled_<f>.txt`` / ``unlabeled_<f>.txt`` pair is written per
            fraction, ``/`` becoming ``-`` in the name. Defaults to
            ``('1/16', '1/8', '1/4', '1/2', '1')``.
        overwrite (bool): Replace a dataset generated with other arguments.
            Defaults to False.

    Returns:
        dict: Summary with ``out_dir``, ``reused`` (nothing was written),
        ``time_s``, ``classes``, ``split_counts`` (lines per split file),
        ``class_pixel_freq_train`` (share of training pixels per class) and
        ``arguments``.
    """
    return generate_dataset(TOY_SPEC, out_dir, num_train, num_val, img_size,
                            seed, fractions, overwrite)


def _fraction_texts(fractions: Sequence[str]) -> List[str]:
    """Fractions as stripped strings (a single string is one fraction)."""
    if isinstance(fractions, str):
        fractions = [fractions]
    return [str(text).strip() for text in fractions]
