# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Generator of the embedded toy dataset ``ToyShapes`` (6 classes).

Small RGB images of textured shapes on a cluttered background, with per-pixel
labels and nested labeled/unlabeled split lists (layout in
:mod:`toy_writer`).

The task is built so that scarce labels hurt. Each object class has a
preferred hue, but the hues of neighbouring classes overlap (a colour-only
pixel classifier trained on all labels gets about two thirds of the object
pixels right), so the class has to be settled by the object's *shape*.
Textures are drawn independently of the class, the background can take any
colour (weakly saturated) and carries clutter (thin lines, blobs, specks) in
object-like colours, objects vary widely in size, rotation and aspect ratio,
and they occlude each other (the label follows what is visible).
"""
from typing import Sequence, Tuple

import numpy as np
from toy_drawing import (add_noise, cluttered_background, draw_texture,
                         paint_object)
from toy_writer import DatasetSpec, generate_dataset

from mmseg_u2pl.datasets.toy_dataset import TOY_CLASSES as CLASSES
from mmseg_u2pl.datasets.toy_dataset import TOY_PALETTE as PALETTE

GENERATOR_VERSION = '2.2'

DEFAULT_FRACTIONS = ('1/16', '1/8', '1/4', '1/2', '1')
# 128 training images: 1/16 of the labels is 8 images, few enough that a
# network trained from scratch clearly misses the other 120 (measured in
# docs/benchmarks.md); the validation set keeps 256 images for a stable mIoU.
DEFAULT_NUM_TRAIN = 128
DEFAULT_NUM_VAL = 256

# Object and scene statistics (sizes in pixels unless noted).
MIN_OBJECT_SIZE = 16.
MAX_OBJECT_SIZE_RATIO = 0.5  # of the image side
MAX_OBJECTS = 6
# Each object class has a preferred hue; the spread (the drawing's default
# hue spread) makes neighbouring classes overlap, so colour is a weak cue and
# shape has to settle the class.
CLASS_HUES = {1: 0.0, 2: 0.2, 3: 0.4, 4: 0.6, 5: 0.8}


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
    canvas, grid_y, grid_x = cluttered_background(rng, img_size,
                                                  list(CLASS_HUES.values()))
    label = np.zeros((img_size, img_size), dtype=np.uint8)
    max_size = max(MIN_OBJECT_SIZE, MAX_OBJECT_SIZE_RATIO * img_size)
    for _ in range(rng.integers(1, MAX_OBJECTS + 1)):
        class_id = int(rng.integers(1, len(CLASSES)))
        size = rng.uniform(MIN_OBJECT_SIZE, max_size)
        cy, cx = rng.uniform(0., img_size, size=2)
        hue = CLASS_HUES[class_id]
        drawn = paint_object(
            rng,
            canvas,
            grid_y,
            grid_x,
            CLASSES[class_id],
            size,
            cy,
            cx,
            lambda ys, xs, hue=hue: draw_texture(rng, ys, xs, img_size, hue))
        if drawn is not None:
            label[drawn[0]][drawn[1]] = class_id
    return add_noise(rng, canvas), label


#: ``meta.json`` names the generator by this fixed string, so that datasets
#: already on disk stay reusable.
TOY_SPEC = DatasetSpec('mmseg_u2pl.datasets.toy_generator', GENERATOR_VERSION,
                       CLASSES, PALETTE, render_sample)


def generate_toy_dataset(out_dir: str,
                         num_train: int = DEFAULT_NUM_TRAIN,
                         num_val: int = DEFAULT_NUM_VAL,
                         img_size: int = 96,
                         seed: int = 0,
                         fractions: Sequence[str] = DEFAULT_FRACTIONS,
                         overwrite: bool = False) -> dict:
    """Write the ToyShapes dataset to ``out_dir``.

    Arguments and summary as in :func:`toy_writer.generate_dataset`;
    defaults: 128 training and 256 validation images of 96 px, seed 0,
    fractions ``('1/16', '1/8', '1/4', '1/2', '1')``.
    """
    return generate_dataset(TOY_SPEC, out_dir, num_train, num_val, img_size,
                            seed, fractions, overwrite)
