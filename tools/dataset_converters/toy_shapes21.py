# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Generator of the embedded dataset ``ToyShapes21`` (21 classes).

The 6-class ToyShapes leaves an unlabeled pixel only three candidate
negative classes (ranks 3-5) in U2PL's contrastive loss. ToyShapes21 moves
towards PASCAL VOC: background + 20 object classes in ten confusable pairs,
several objects per image and a long-tailed class frequency. Its design
(classes, cues, frequencies, sizes, splits, and why it changed from the
first version) is written down in ``docs/benchmarks.md`` ("ToyShapes21").
The on-disk layout, the seeding per image and the split lists are the
toy's (:mod:`toy_writer`, drawn with :mod:`toy_drawing`).

Each group (a pair) has its own hue; its two classes share the hue and
one of outline or texture, and differ in the other and in their tone: the
first is light (pale, bright colours), the second dark (saturated, deeper
colours), with overlapping ranges, so that colour alone settles most of an
object's pixels and leaves some ambiguous:

=======  =====  =================  ===================================
group    hue    shared             the two classes differ in
=======  =====  =================  ===================================
red      0.00   plain              outline: disk / cross
orange   0.08   square             texture: plain / stripes
yellow   0.16   plain              outline: triangle / ring
lime     0.26   disk               texture: plain / checker
green    0.36   plain              outline: square / star
teal     0.46   triangle           texture: plain / dots
azure    0.56   plain              outline: disk / bar
blue     0.66   square             texture: plain / checker
purple   0.76   plain              outline: triangle / crescent
magenta  0.88   disk               texture: plain / stripes
=======  =====  =================  ===================================

The module also draws the images of the backbone's pretraining task
(:func:`render_source_sample`): objects of outlines that no target class
uses, labelled per pixel by their outline, hue, tone and texture.
"""
from typing import NamedTuple, Sequence, Tuple

import numpy as np
from toy_drawing import (add_noise, cluttered_background, draw_texture,
                         paint_object)
from toy_writer import DatasetSpec, generate_dataset

from mmseg_u2pl.datasets.toy_dataset import TOY21_CLASSES as CLASSES
from mmseg_u2pl.datasets.toy_dataset import TOY21_PALETTE as PALETTE

GENERATOR_VERSION = '3.0'

HUES = dict(
    red=0.0,
    orange=0.08,
    yellow=0.16,
    lime=0.26,
    green=0.36,
    teal=0.46,
    azure=0.56,
    blue=0.66,
    purple=0.76,
    magenta=0.88)
#: Hue spread of the object colours: neighbouring groups lie 4-6 spreads
#: apart, so the hue tells the group and not the class within it.
HUE_SPREAD = 0.02
#: Saturation and value (HSV) ranges of the two tones; they overlap in
#: value 0.65-0.8 and saturation 0.55-0.7.
TONES = dict(
    light=dict(saturation=(0.3, 0.7), value=(0.65, 1.)),
    dark=dict(saturation=(0.55, 1.), value=(0.4, 0.8)))
#: Class textures: strong enough to read after a 0.5x rescale.
CUE_CONTRAST = (0.5, 0.9)
CUE_PERIOD = (5., 10.)


class ObjectClass(NamedTuple):
    """How one object class is drawn."""
    name: str
    shape: str
    hue: str
    texture: str
    tone: str


#: (outline, hue, texture) of the object classes, in the order of
#: :data:`CLASSES`: the two members of each group are neighbours.
_CUES = (
    ('disk', 'red', 'plain'), ('cross', 'red', 'plain'),
    ('square', 'orange', 'plain'), ('square', 'orange', 'stripes'),
    ('triangle', 'yellow', 'plain'), ('ring', 'yellow', 'plain'),
    ('disk', 'lime', 'plain'), ('disk', 'lime', 'checker'),
    ('square', 'green', 'plain'), ('star', 'green', 'plain'),
    ('triangle', 'teal', 'plain'), ('triangle', 'teal', 'dots'),
    ('disk', 'azure', 'plain'), ('bar', 'azure', 'plain'),
    ('square', 'blue', 'plain'), ('square', 'blue', 'checker'),
    ('triangle', 'purple', 'plain'), ('crescent', 'purple', 'plain'),
    ('disk', 'magenta', 'plain'), ('disk', 'magenta', 'stripes'))
OBJECT_CLASSES = tuple(
    ObjectClass(name, *cues, tone=('light', 'dark')[index % 2])
    for index, (name, cues) in enumerate(zip(CLASSES[1:], _CUES)))
GROUP_SIZE = 2
NUM_GROUPS = 10


def frequency_ranks() -> np.ndarray:
    """Frequency rank (1 = most frequent) of each object class.

    The first member of each group ranks 1-10 (group order), the second
    11-20: every group has a frequent and a rarer member.
    """
    index = np.arange(len(OBJECT_CLASSES))
    return (index % GROUP_SIZE) * NUM_GROUPS + index // GROUP_SIZE + 1


#: Probability of each object class per drawn object, ``1 / sqrt(rank)``
#: normalised (13.6 % for the most frequent, 3.0 % for the rarest).
CLASS_PROBS = (frequency_ranks()**-0.5) / np.sum(frequency_ranks()**-0.5)

MIN_OBJECTS, MAX_OBJECTS = 3, 6
MIN_OBJECT_SIZE = 20.
MAX_OBJECT_SIZE_RATIO = 0.58  # of the image side: 56 pixels of 96

DEFAULT_NUM_TRAIN = 512
DEFAULT_NUM_VAL = 256
DEFAULT_IMG_SIZE = 96
DEFAULT_FRACTIONS = ('1/32', '1/16', '1/8', '1/4', '1/2', '1')


def _cue_painter(rng: np.random.Generator,
                 hue: float,
                 texture: str,
                 img_size: int,
                 spread: float = HUE_SPREAD,
                 tone: str = 'light'):
    """``paint(ys, xs)`` for :func:`toy_drawing.paint_object`: colours
    around ``hue`` (normal, std ``spread``) of one of :data:`TONES` in a
    readable ``texture``."""

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
            spread=spread,
            **TONES[tone])

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
            _cue_painter(
                rng, HUES[cls.hue], cls.texture, img_size, tone=cls.tone))
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
#: Twelfths of the hue circle, ``[k / 12, (k + 1) / 12)``.
SOURCE_HUE_BINS = 12
#: What the pretraining task labels at each object pixel: one class per
#: attribute (an outline, a twelfth of the hue circle, a tone, a texture).
SOURCE_ATTRIBUTES = dict(
    outline=SOURCE_SHAPES,
    hue=tuple(f'hue{k}' for k in range(SOURCE_HUE_BINS)),
    tone=tuple(TONES),
    texture=SOURCE_TEXTURES)


def render_source_sample(rng: np.random.Generator,
                         img_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """One image of the pretraining task and its label maps.

    2-5 objects of :data:`SOURCE_SHAPES` outlines, 25-75 % of the image
    side, each of any hue, tone and :data:`SOURCE_TEXTURES` texture, on the
    target's kind of cluttered background; occlusion as in the target.
    Each pixel is labelled with the attributes of
    :data:`SOURCE_ATTRIBUTES` of the object it shows.

    Args:
        rng (np.random.Generator): Random stream of this image.
        img_size (int): Side of the square image in pixels.

    Returns:
        tuple[np.ndarray, np.ndarray]: RGB image ``(H, W, 3)`` and label
        maps ``(4, H, W)`` (outline, hue, tone, texture), both uint8. The
        outline map holds 0 on the background and ``i + 1`` for
        ``SOURCE_SHAPES[i]``; the others hold the attribute's index on
        objects and 255 (ignored) on the background.
    """
    canvas, grid_y, grid_x = cluttered_background(rng, img_size,
                                                  list(HUES.values()))
    labels = np.full((4, img_size, img_size), 255, dtype=np.uint8)
    labels[0] = 0
    for _ in range(rng.integers(2, 6)):
        shape = int(rng.integers(len(SOURCE_SHAPES)))
        hue = rng.uniform(0., 1.)
        tone = int(rng.integers(len(TONES)))
        texture = int(rng.integers(len(SOURCE_TEXTURES)))
        size = rng.uniform(0.25, 0.75) * img_size
        cy, cx = rng.uniform(0., img_size, size=2)
        drawn = paint_object(
            rng, canvas, grid_y, grid_x, SOURCE_SHAPES[shape], size, cy, cx,
            _cue_painter(
                rng,
                hue,
                SOURCE_TEXTURES[texture],
                img_size,
                spread=0.,
                tone=tuple(TONES)[tone]))
        if drawn is not None:
            win, mask = drawn
            values = (shape + 1, int(hue * SOURCE_HUE_BINS), tone, texture)
            for channel, value in enumerate(values):
                labels[channel][win][mask] = value
    return add_noise(rng, canvas), labels
