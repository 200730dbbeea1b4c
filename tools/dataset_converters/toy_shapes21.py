# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Generator of the embedded dataset ``ToyShapes21`` (21 classes).

The 6-class ToyShapes leaves an unlabeled pixel only three candidate
negative classes (ranks 3-5) in U2PL's contrastive loss. ToyShapes21 moves
towards PASCAL VOC: background + 20 object classes in five groups of four
confusable classes, several objects per image and a long-tailed class
frequency. Its design (classes, cues, frequencies, sizes, splits) is
written down in ``docs/benchmarks.md`` ("ToyShapes21"). The on-disk layout,
the seeding per image and the split lists are the toy's
(:mod:`toy_writer`, drawn with :mod:`toy_drawing`).

Within a group the classes share two of three cues (outline, colour,
texture) and differ in the third:

==========  ======================  ===========  ===========================
group       shared                  differs in   classes
==========  ======================  ===========  ===========================
A           red, plain              outline      disk, square, triangle, cross
B           blue, disk              texture      plain, stripes, dots, checker
C           square, stripes         hue          orange, lime, green, purple
D           green, dots             outline      ring, star, bar, crescent
E           magenta, triangle       texture      plain, stripes, dots, checker
==========  ======================  ===========  ===========================

The module also draws the images of the backbone's pretraining task
(:func:`render_source_image`): one object of an outline that no target
class uses, labelled by its (outline, texture) pair.
"""
from typing import NamedTuple, Sequence, Tuple

import numpy as np
from toy_drawing import (add_noise, cluttered_background, draw_texture,
                         paint_object)
from toy_writer import DatasetSpec, generate_dataset

from mmseg_u2pl.datasets.toy_dataset import TOY21_CLASSES as CLASSES
from mmseg_u2pl.datasets.toy_dataset import TOY21_PALETTE as PALETTE

GENERATOR_VERSION = '1.0'

HUES = dict(
    red=0.0,
    orange=0.1,
    lime=0.22,
    green=0.36,
    blue=0.6,
    purple=0.72,
    magenta=0.85)
#: Hue spread of the object colours (the 6-class toy uses 0.1, where colour
#: is only a hint; here hue is the cue of group C).
HUE_SPREAD = 0.025
#: Class textures: strong enough to read after a 0.5x rescale.
CUE_CONTRAST = (0.5, 0.9)
CUE_PERIOD = (5., 10.)


class ObjectClass(NamedTuple):
    """How one object class is drawn."""
    name: str
    shape: str
    hue: str
    texture: str


def _group(shapes, hues, textures) -> Tuple[Tuple[str, str, str], ...]:
    return tuple(zip(shapes, hues, textures))


#: (outline, hue, texture) of the object classes, in the order of
#: :data:`CLASSES`.
_CUES = (
    # A: red, plain; outline differs
    _group(('disk', 'square', 'triangle', 'cross'), ['red'] * 4, ['plain'] * 4)
    # B: blue disk; texture differs
    + _group(['disk'] * 4, ['blue'] * 4,
             ('plain', 'stripes', 'dots', 'checker'))
    # C: striped square; hue differs
    + _group(['square'] * 4,
             ('orange', 'lime', 'green', 'purple'), ['stripes'] * 4)
    # D: green, dots; outline differs
    + _group(('ring', 'star', 'bar', 'crescent'), ['green'] * 4, ['dots'] * 4)
    # E: magenta triangle; texture differs
    + _group(['triangle'] * 4, ['magenta'] * 4,
             ('plain', 'stripes', 'dots', 'checker')))
OBJECT_CLASSES = tuple(
    ObjectClass(name, *cues) for name, cues in zip(CLASSES[1:], _CUES))
GROUP_SIZE = 4
NUM_GROUPS = 5


def frequency_ranks() -> np.ndarray:
    """Frequency rank (1 = most frequent) of each object class.

    Ranks go round the groups: the first class of group A has rank 1, the
    first of B rank 2, ..., the last of E rank 20.
    """
    index = np.arange(len(OBJECT_CLASSES))
    return (index % GROUP_SIZE) * NUM_GROUPS + index // GROUP_SIZE + 1


#: Probability of each object class per drawn object, ``1 / rank``
#: normalised (27.8 % for the most frequent, 1.4 % for the rarest).
CLASS_PROBS = (1. / frequency_ranks()) / np.sum(1. / frequency_ranks())

MIN_OBJECTS, MAX_OBJECTS = 2, 6
MIN_OBJECT_SIZE = 16.
MAX_OBJECT_SIZE_RATIO = 0.5  # of the image side

DEFAULT_NUM_TRAIN = 512
DEFAULT_NUM_VAL = 256
DEFAULT_IMG_SIZE = 96
DEFAULT_FRACTIONS = ('1/32', '1/16', '1/8', '1/4', '1/2', '1')


def _cue_painter(rng: np.random.Generator, hue: float, texture: str,
                 img_size: int):
    """``paint(ys, xs)`` for :func:`toy_drawing.paint_object`: colours
    around ``hue`` (spread :data:`HUE_SPREAD`) in a readable ``texture``."""

    def paint(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        return draw_texture(
            rng,
            ys,
            xs,
            img_size,
            hue,
            kind=texture,
            contrast_range=CUE_CONTRAST,
            period_range=CUE_PERIOD,
            spread=HUE_SPREAD)

    return paint


def render_sample(rng: np.random.Generator,
                  img_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """One image and its label map, as :func:`toy_shapes.render_sample`,
    with objects of :data:`OBJECT_CLASSES` drawn with :data:`CLASS_PROBS`;
    labels index :data:`CLASSES`."""
    canvas, grid_y, grid_x = cluttered_background(rng, img_size,
                                                  list(HUES.values()))
    label = np.zeros((img_size, img_size), dtype=np.uint8)
    max_size = max(MIN_OBJECT_SIZE, MAX_OBJECT_SIZE_RATIO * img_size)
    for _ in range(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1)):
        index = int(rng.choice(len(OBJECT_CLASSES), p=CLASS_PROBS))
        cls = OBJECT_CLASSES[index]
        size = rng.uniform(MIN_OBJECT_SIZE, max_size)
        cy, cx = rng.uniform(0., img_size, size=2)
        drawn = paint_object(
            rng, canvas, grid_y, grid_x, cls.shape, size, cy, cx,
            _cue_painter(rng, HUES[cls.hue], cls.texture, img_size))
        if drawn is not None:
            label[drawn[0]][drawn[1]] = index + 1
    return add_noise(rng, canvas), label


#: ``meta.json`` names the generator by this fixed string, so that datasets
#: already on disk stay reusable.
TOY21_SPEC = DatasetSpec('mmseg_u2pl.datasets.toy21_generator',
                         GENERATOR_VERSION, CLASSES, PALETTE, render_sample)


def generate_toy21_dataset(out_dir: str,
                           num_train: int = DEFAULT_NUM_TRAIN,
                           num_val: int = DEFAULT_NUM_VAL,
                           img_size: int = DEFAULT_IMG_SIZE,
                           seed: int = 0,
                           fractions: Sequence[str] = DEFAULT_FRACTIONS,
                           overwrite: bool = False) -> dict:
    """Write the ToyShapes21 dataset to ``out_dir`` (the toy's layout).

    Args:
        out_dir (str): Dataset root (the config's ``data_root``).
        num_train (int): Training images. Defaults to 512.
        num_val (int): Validation images. Defaults to 256.
        img_size (int): Side of the square images. Defaults to 96.
        seed (int): Seed of everything. Defaults to 0.
        fractions (Sequence[str]): Labeled fractions of the training set.
            Defaults to ``('1/32', '1/16', '1/8', '1/4', '1/2', '1')``.
        overwrite (bool): Replace a dataset generated with other arguments.
            Defaults to False.

    Returns:
        dict: The summary of :func:`toy_writer.generate_dataset`.
    """
    return generate_dataset(TOY21_SPEC, out_dir, num_train, num_val, img_size,
                            seed, fractions, overwrite)


# ---------------------------------------------------------------------------
# The source task of the backbone's pretraining
# ---------------------------------------------------------------------------
#: Outlines no ToyShapes / ToyShapes21 class uses.
SOURCE_SHAPES = ('pentagon', 'hexagon', 'semidisk', 'frame', 'ell', 'tee',
                 'arrow', 'double-disk')
SOURCE_TEXTURES = ('plain', 'stripes', 'dots', 'checker')
#: Source classes: every (outline, texture) pair.
SOURCE_CLASSES = tuple(f'{shape}/{texture}' for shape in SOURCE_SHAPES
                       for texture in SOURCE_TEXTURES)


def render_source_image(rng: np.random.Generator,
                        img_size: int) -> Tuple[np.ndarray, int]:
    """One image of the pretraining task and its class.

    A single object of a :data:`SOURCE_SHAPES` outline with a
    :data:`SOURCE_TEXTURES` texture of any hue, 40-80 % of the image side,
    on the target's kind of cluttered background.

    Args:
        rng (np.random.Generator): Random stream of this image.
        img_size (int): Side of the square image in pixels.

    Returns:
        tuple[np.ndarray, int]: RGB image ``(H, W, 3)`` uint8 and the index
        of its class in :data:`SOURCE_CLASSES`.
    """
    canvas, grid_y, grid_x = cluttered_background(rng, img_size,
                                                  list(HUES.values()))
    label = int(rng.integers(len(SOURCE_CLASSES)))
    shape = SOURCE_SHAPES[label // len(SOURCE_TEXTURES)]
    texture = SOURCE_TEXTURES[label % len(SOURCE_TEXTURES)]
    size = rng.uniform(0.4, 0.8) * img_size
    cy, cx = img_size / 2 + rng.uniform(-0.15, 0.15, size=2) * img_size
    paint = _cue_painter(rng, rng.uniform(0., 1.), texture, img_size)
    paint_object(rng, canvas, grid_y, grid_x, shape, size, cy, cx, paint)
    return add_noise(rng, canvas), label
