# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Synthetic datasets in the own-dataset folder layout.

They check the own-dataset template
(``configs/u2pl/u2pl_deeplabv3plus_r18-d8_1xb4+4-80e_custom-512x512.py``)
on data it was not calibrated on (docs/benchmarks.md, "Own-data check").
Each is written as a user's folder would be, and its split lists by
``make_splits.py`` as the README says::

    <out>/images/train/img_0000.jpg   (.png for ``objects``)
    <out>/masks/train/img_0000.png    class index per pixel ('L')
    <out>/images/val/..., <out>/masks/val/...
    <out>/splits/labeled.txt, <out>/splits/unlabeled.txt
    <out>/meta.json                   kind, version, classes, palette

``regions``: 5 "stuff" classes, 48x48 JPEG images tiled by 3-7 Voronoi
regions (no background class); a region's class sets the hue family of its
colours (hues 0, 0.2, ..., 0.8 with a normal spread of 0.08, so that
neighbouring classes overlap), its brightness, saturation and texture are
drawn independently of the class. 1/8 labeled.

``objects``: 6 classes, 64x64 PNG images; a background (textured, any
colour, cluttered with lines and blobs in the objects' hues) and 1-4
objects of 5 outlines (disk, square, triangle, ring, cross); an outline
prefers a hue family (hues 0, 0.2, ..., 0.8 with a normal spread of 0.1),
so colour hints at the class and the outline settles it between
neighbouring families and against the clutter. 1/8 labeled.

Every image is seeded from ``(kind, split, index)``; the split lists are
drawn with seed 0 and every class labeled at least once.
"""
import json
import os
import os.path as osp
from typing import Callable, Dict, NamedTuple, Tuple

import numpy as np
from PIL import Image
from split_utils import read_split_list
from toy_drawing import (SHAPES, add_noise, cluttered_background,
                         draw_texture, paint_object)

#: Hue families (HSV, in [0, 1)): class ``i`` of ``regions`` and outline
#: ``i`` of ``objects`` prefer hue ``HUE_FAMILIES[i]``
HUE_FAMILIES = (0., 0.2, 0.4, 0.6, 0.8)
OBJECT_SHAPES = SHAPES[:5]
OBJECT_HUE_SPREAD = 0.1
REGION_CLASSES = ('red', 'yellow', 'green', 'blue', 'purple')
REGION_HUE_SPREAD = 0.08
NUM_REGIONS = (3, 7)  # regions: Voronoi regions per image
NUM_OBJECTS = (1, 4)  # objects: objects per image
OBJECT_SIZE = (16., 36.)  # objects: nominal size in pixels


class FolderDataset(NamedTuple):
    """How one dataset is drawn and laid out (``version`` changes with
    anything that changes its images or splits)."""
    version: str
    classes: Tuple[str, ...]
    img_size: int
    img_suffix: str
    num_train: int
    num_val: int
    fraction: str
    draw: Callable[[np.random.Generator, int], Tuple[np.ndarray,
                                                     np.ndarray]]


def draw_regions(rng: np.random.Generator,
                 img_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """A Voronoi tiling whose regions' classes are hue families."""
    grid_y, grid_x = np.mgrid[0:img_size, 0:img_size].astype(np.float32)
    num = int(rng.integers(NUM_REGIONS[0], NUM_REGIONS[1] + 1))
    centres = rng.uniform(0., img_size, size=(num, 2)).astype(np.float32)
    dist = ((grid_y[None] - centres[:, 0, None, None])**2 +
            (grid_x[None] - centres[:, 1, None, None])**2)
    region = dist.argmin(axis=0)
    classes = rng.integers(0, len(REGION_CLASSES), size=num)
    canvas = np.zeros((img_size, img_size, 3), np.float32)
    label = np.zeros((img_size, img_size), np.uint8)
    for index in range(num):
        mask = region == index
        if not mask.any():
            continue
        canvas[mask] = draw_texture(
            rng,
            grid_y[mask],
            grid_x[mask],
            img_size,
            hue=HUE_FAMILIES[classes[index]],
            spread=REGION_HUE_SPREAD,
            saturation=(0.3, 1.),
            value=(0.3, 1.))
        label[mask] = classes[index]
    return add_noise(rng, canvas), label


def draw_objects(rng: np.random.Generator,
                 img_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Objects of 5 outlines, each in its hue family, on a background
    cluttered in the same hues."""
    canvas, grid_y, grid_x = cluttered_background(rng, img_size,
                                                  HUE_FAMILIES)
    label = np.zeros((img_size, img_size), np.uint8)
    for _ in range(int(rng.integers(NUM_OBJECTS[0], NUM_OBJECTS[1] + 1))):
        class_id = int(rng.integers(1, len(OBJECT_SHAPES) + 1))
        hue = HUE_FAMILIES[class_id - 1]
        cy, cx = rng.uniform(0., img_size, size=2)
        drawn = paint_object(
            rng, canvas, grid_y, grid_x, OBJECT_SHAPES[class_id - 1],
            rng.uniform(*OBJECT_SIZE), cy, cx,
            lambda ys, xs, hue=hue: draw_texture(
                rng, ys, xs, img_size, hue, spread=OBJECT_HUE_SPREAD))
        if drawn is not None:
            label[drawn[0]][drawn[1]] = class_id
    return add_noise(rng, canvas), label


DATASETS: Dict[str, FolderDataset] = {
    'regions':
    FolderDataset('1.2', REGION_CLASSES, 48, '.jpg', 640, 160, '1/8',
                  draw_regions),
    'objects':
    FolderDataset('1.4', ('background', ) + OBJECT_SHAPES, 64, '.png', 384,
                  160, '1/8', draw_objects),
}


def palette(num_classes: int) -> list:
    """Distinct RGB colours, one per class (for the visualiser)."""
    rng = np.random.default_rng(num_classes)
    return rng.integers(0, 256, size=(num_classes, 3)).tolist()


def make_folder_dataset(kind: str, out_dir: str) -> dict:
    """Write dataset ``kind`` to ``out_dir`` (reused when already there).

    Returns:
        dict: The dataset's ``meta.json`` (kind, version, classes, palette,
        image size and suffix, split counts).
    """
    if kind not in DATASETS:
        raise ValueError(f'dataset {kind!r} is not one of {list(DATASETS)}')
    spec = DATASETS[kind]
    meta_path = osp.join(out_dir, 'meta.json')
    if osp.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if (meta.get('kind'), meta.get('version')) == (kind, spec.version):
            return meta
        raise FileExistsError(
            f'{out_dir} holds {meta.get("kind")} version '
            f'{meta.get("version")}, not {kind} {spec.version}; remove '
            'it or choose another folder')
    stream = list(DATASETS).index(kind)
    splits = (('train', spec.num_train), ('val', spec.num_val))
    for split_index, (split, num) in enumerate(splits):
        os.makedirs(osp.join(out_dir, 'images', split), exist_ok=True)
        os.makedirs(osp.join(out_dir, 'masks', split), exist_ok=True)
        for index in range(num):
            rng = np.random.default_rng((stream, split_index, index))
            image, label = spec.draw(rng, spec.img_size)
            name = f'img_{index:04d}'
            Image.fromarray(image).save(
                osp.join(out_dir, 'images', split, name + spec.img_suffix),
                quality=90)
            Image.fromarray(label).save(
                osp.join(out_dir, 'masks', split, name + '.png'))
    import make_splits  # the user's tool, as the README runs it
    make_splits.main([
        '--img-dir',
        osp.join(out_dir, 'images', 'train'), '--img-suffix', spec.img_suffix,
        '--fraction', spec.fraction, '--seed', '0', '--label-dir',
        osp.join(out_dir, 'masks', 'train'), '--num-classes',
        str(len(spec.classes)), '--require-all-classes', '--out-dir',
        osp.join(out_dir, 'splits')
    ])
    counts = {
        name: len(read_split_list(osp.join(out_dir, 'splits', name + '.txt')))
        for name in ('labeled', 'unlabeled')
    }
    meta = dict(
        kind=kind,
        version=spec.version,
        classes=list(spec.classes),
        palette=palette(len(spec.classes)),
        img_size=spec.img_size,
        img_suffix=spec.img_suffix,
        num_val=spec.num_val,
        **counts)
    with open(meta_path, 'w') as f:
        json.dump(meta, f, indent=2)
    return meta
