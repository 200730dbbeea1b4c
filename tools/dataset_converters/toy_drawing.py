# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Drawing of the embedded datasets' images (ToyShapes, ToyShapes21).

Textured objects of random outline, size, rotation and aspect ratio over a
cluttered background, with Gaussian pixel noise; every function draws from
the image's own random stream, so the same stream gives the same pixels.
Only numpy is used. About 340 lines, a fifth of them the sixteen outlines of
:func:`shape_mask`.
"""
import colorsys
import math
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

MAX_ASPECT = 1.5
MIN_OBJECT_CONTRAST = 48.  # mean RGB distance to what the object covers
TEXTURES = ('plain', 'stripes', 'dots', 'checker', 'gradient')
#: Default hue spread of object colours around their class hue.
HUE_SPREAD = 0.1
TEXTURE_CONTRAST = (0.15, 0.5)  # share of a full colour change


#: Default ranges of an object colour's saturation and value (HSV).
SATURATION = (0.5, 1.)
VALUE = (0.5, 1.)


def _random_colour(rng: np.random.Generator,
                   hue: Optional[float] = None,
                   spread: float = HUE_SPREAD,
                   saturation: Tuple[float, float] = SATURATION,
                   value: Tuple[float, float] = VALUE) -> np.ndarray:
    """A random RGB colour, around ``hue`` (in [0, 1)) when one is given.

    Without a hue the colour is weakly saturated (backgrounds). With one, the
    hue is drawn from a normal distribution of std ``spread`` (default
    :data:`HUE_SPREAD`) around it, saturation and value uniformly from their
    ranges.
    """
    if hue is None:  # backgrounds: any hue, weakly saturated
        rgb = colorsys.hsv_to_rgb(
            rng.uniform(0., 1.), rng.uniform(0., 0.35),
            rng.uniform(0.25, 0.95))
        return np.asarray(rgb) * 255.
    h = (hue + rng.normal(0., spread)) % 1.
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(*saturation),
                              rng.uniform(*value))
    return np.asarray(rgb) * 255.


def draw_texture(rng: np.random.Generator,
                 ys: np.ndarray,
                 xs: np.ndarray,
                 img_size: int,
                 hue: Optional[float] = None,
                 kind: Optional[str] = None,
                 contrast_range: Tuple[float, float] = TEXTURE_CONTRAST,
                 period_range: Optional[Tuple[float, float]] = None,
                 spread: float = HUE_SPREAD,
                 saturation: Tuple[float, float] = SATURATION,
                 value: Tuple[float, float] = VALUE) -> np.ndarray:
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
        saturation (tuple[float, float]): Saturation range of both colours
            when ``hue`` is given. Defaults to :data:`SATURATION`.
        value (tuple[float, float]): Value (brightness) range of both
            colours when ``hue`` is given. Defaults to :data:`VALUE`.

    Returns:
        np.ndarray: Colours of shape ``ys.shape + (3, )``, float32.
    """
    if kind is None:
        kind = TEXTURES[rng.integers(len(TEXTURES))]
    elif kind not in TEXTURES:
        raise ValueError(f'texture {kind!r} is not one of {TEXTURES}')
    colour_a = _random_colour(rng, hue, spread, saturation, value)
    # The second colour lies part-way towards another random colour: texture
    # edges stay weaker, on average, than the outlines that carry the class.
    contrast = rng.uniform(*contrast_range)
    colour_b = colour_a + contrast * (
        _random_colour(rng, hue, spread, saturation, value) - colour_a)
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


def _clutter_hue(rng: np.random.Generator, hues: Sequence[float]) -> float:
    """Clutter takes the hue of a random object class (a distractor)."""
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


def _draw_clutter(rng: np.random.Generator, canvas: np.ndarray,
                  grid_y: np.ndarray, grid_x: np.ndarray,
                  hues: Sequence[float]) -> None:
    """Background clutter: thin lines, small irregular blobs and specks.

    Clutter uses the same colours and textures as objects and stays label 0.
    ``hues`` are the object hues it takes.
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
        canvas[win][mask] = draw_texture(rng, ys, xs, img_size,
                                         _clutter_hue(rng, hues))
    num_specks = rng.integers(0, 30)
    ys = rng.integers(0, img_size, size=num_specks)
    xs = rng.integers(0, img_size, size=num_specks)
    canvas[ys, xs] = rng.uniform(0., 255., size=(num_specks, 3))


def cluttered_background(
        rng: np.random.Generator, img_size: int,
        hues: Sequence[float]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured, cluttered background and its pixel grid.

    Args:
        rng (np.random.Generator): Random stream of the image.
        img_size (int): Side of the square image.
        hues (Sequence[float]): Hues of the object classes, which the
            clutter takes as distractors.

    Returns:
        tuple[np.ndarray, np.ndarray, np.ndarray]: The float32 canvas
        ``(H, W, 3)`` and the row and column grids ``(H, W)``.
    """
    grid_y, grid_x = np.mgrid[0:img_size, 0:img_size].astype(np.float32)
    canvas = draw_texture(rng, grid_y, grid_x, img_size)
    _draw_clutter(rng, canvas, grid_y, grid_x, hues)
    return canvas, grid_y, grid_x


def paint_object(
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


def add_noise(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Gaussian pixel noise of random std (3-10), as a uint8 image."""
    noise_std = rng.uniform(3., 10.)
    canvas += rng.normal(0., noise_std, size=canvas.shape).astype(np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
