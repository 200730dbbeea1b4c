# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Pretrain the toy configs' backbone on a disjoint source task.

The paper's networks start from ImageNet weights; the ToyShapes21 configs
start from the weights this tool writes. The source task shares no class
and no image with the target: 64x64 scenes of 2-5 objects whose outlines
are none of the target's (pentagon, hexagon, semidisk, frame, L, T, arrow,
double disk), of any hue, tone and texture, on the target's kind of
cluttered background, labelled per pixel by four attributes: the outline
(8 and the background), the twelfth of the hue circle, the tone (light,
dark) and the texture (4) (:func:`render_source_sample` of
``tools/dataset_converters/toy_shapes21.py``; its random streams never
meet the target dataset's). A dense task, as the target's, that asks the
backbone to see every cue of this world (colour, tone, texture, outline)
on objects that are not the target's, the role ImageNet's variety plays
for VOC.

The network is the backbone of ``configs/_base_/models/
deeplabv3plus_r18-d8_toy.py`` (ResNet-18-V1c, 32-channel stem and base,
output stride 8, BN instead of SyncBN) with one 1x1 convolution per
attribute on its last feature map, upsampled to the image; the loss is the
sum of the four cross-entropies. The output is
``{'state_dict': <backbone weights>, 'meta': {...}}`` with the
backbone's own keys (``stem.0.weight``, ``layer1.0.conv1.weight``, ...),
the form mmseg configs load with
``backbone.init_cfg=dict(type='Pretrained', checkpoint=PATH)``. By default
it is cached outside the repository, in
``~/.cache/mmseg_u2pl/pretrained/`` (``$MMSEG_U2PL_CACHE/pretrained``), and
a checkpoint made with the same arguments is reused (``--force`` trains
again). The configs name the default path; a checkpoint elsewhere is
passed with ``--cfg-options model.backbone.init_cfg.checkpoint=PATH``.

Run time of the defaults (2,000 iterations of 16 images, 2 threads): see
docs/benchmarks.md (ToyShapes21).

Examples::

    python tools/analysis/pretrain_toy_backbone.py
    python tools/analysis/pretrain_toy_backbone.py --iters 2 \\
        --batch-size 4 --num-images 16 --num-val 8 --out /tmp/tiny.pth
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if osp.dirname(osp.abspath(__file__)) not in sys.path:
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import ROOT  # noqa: E402

#: The model config whose backbone is pretrained.
MODEL_CONFIG = 'configs/_base_/models/deeplabv3plus_r18-d8_toy.py'
CHECKPOINT_NAME = 'resnet18-v1c-c32_toy-source-attributes.pth'
#: Seed streams of the source images (the target generator uses 0-2).
TRAIN_STREAM, VAL_STREAM = 1000, 1001


def default_output() -> str:
    """``$MMSEG_U2PL_CACHE/pretrained/<name>`` (``~/.cache/mmseg_u2pl``)."""
    cache = os.environ.get('MMSEG_U2PL_CACHE',
                           osp.join('~', '.cache', 'mmseg_u2pl'))
    return osp.join(osp.expanduser(cache), 'pretrained', CHECKPOINT_NAME)


def model_config():
    """The model config whose backbone is pretrained (:data:`MODEL_CONFIG`)."""
    from mmengine.config import Config
    return Config.fromfile(osp.join(ROOT, MODEL_CONFIG))


def build_backbone(cfg) -> nn.Module:
    """The config's ResNet-18-V1c (its strides and dilations) with BN."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_u2pl  # noqa: F401 (registers the package)
    init_default_scope('mmseg')
    backbone = dict(cfg.model.backbone)
    backbone.update(
        norm_cfg=dict(type='BN', requires_grad=True), init_cfg=None)
    return MODELS.build(backbone)


class SourceSegmenter(nn.Module):
    """Backbone and a 1x1 classifier per attribute of its last feature map,
    upsampled to the image."""

    def __init__(self, backbone: nn.Module, num_classes: List[int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifiers = nn.ModuleList(
            nn.Conv2d(backbone.feat_dim, n, 1) for n in num_classes)

    def forward(self, images: torch.Tensor) -> List[torch.Tensor]:
        feats = self.backbone(images)[-1]
        return [
            F.interpolate(
                classifier(feats),
                images.shape[2:],
                mode='bilinear',
                align_corners=False) for classifier in self.classifiers
        ]


def source_num_classes() -> List[int]:
    """Classes per attribute (the outline's with the background)."""
    from toy_shapes21 import SOURCE_ATTRIBUTES
    return [
        len(values) + (name == 'outline')
        for name, values in SOURCE_ATTRIBUTES.items()
    ]


def source_loss(logits: List[torch.Tensor],
                targets: torch.Tensor) -> torch.Tensor:
    """Sum over the attributes of the cross-entropy (255 ignored)."""
    return sum(
        F.cross_entropy(out, targets[:, i], ignore_index=255)
        for i, out in enumerate(logits))


def make_images(num: int, img_size: int, seed: int,
                stream: int) -> Tuple[np.ndarray, np.ndarray]:
    """``num`` source images ``(N, H, W, 3)`` and label maps
    ``(N, 4, H, W)``, uint8."""
    from toy_shapes21 import render_source_sample
    images = np.empty((num, img_size, img_size, 3), dtype=np.uint8)
    labels = np.empty((num, 4, img_size, img_size), dtype=np.uint8)
    for index in range(num):
        rng = np.random.default_rng([seed, stream, index])
        images[index], labels[index] = render_source_sample(rng, img_size)
    return images, labels


def normalise(images: np.ndarray, cfg) -> torch.Tensor:
    """uint8 RGB ``(N, H, W, 3)`` -> the input of the config's data
    preprocessor (its mean and std, RGB order)."""
    mean = torch.tensor(cfg.data_preprocessor.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data_preprocessor.std).view(1, 3, 1, 1)
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return (tensor - mean) / std


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int) -> List[float]:
    """Pixel accuracy (%) of each attribute on the object pixels, in eval
    mode."""
    model.eval()
    correct = torch.zeros(labels.shape[1])
    total = 0
    for start in range(0, len(images), batch_size):
        target = labels[start:start + batch_size]
        logits = model(images[start:start + batch_size])
        objects = target[:, 0] > 0
        for i, out in enumerate(logits):
            correct[i] += (out.argmax(1) == target[:, i])[objects].sum()
        total += int(objects.sum())
    model.train()
    return [round(100. * float(c) / max(1, total), 1) for c in correct]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--out',
        default=None,
        help='checkpoint path (default: ~/.cache/mmseg_u2pl/pretrained/'
        f'{CHECKPOINT_NAME})')
    parser.add_argument('--iters', type=int, default=2000)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument(
        '--num-images',
        type=int,
        default=8000,
        help='source training images, drawn once (flipped at random)')
    parser.add_argument('--num-val', type=int, default=500)
    parser.add_argument('--img-size', type=int, default=64)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--threads',
        type=int,
        default=2,
        help='torch threads (default: %(default)s, the 2 cores it is sized '
        'for)')
    parser.add_argument(
        '--force',
        action='store_true',
        help='train again when a checkpoint of the same arguments exists')
    args = parser.parse_args(argv)
    for name in ('iters', 'batch_size', 'num_images', 'num_val', 'threads'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1, '
                         f'got {getattr(args, name)}')
    if args.img_size < 32:
        parser.error(f'--img-size must be at least 32, got {args.img_size}')
    return args


def _arguments(args: argparse.Namespace) -> dict:
    return dict(
        iters=args.iters,
        batch_size=args.batch_size,
        lr=args.lr,
        num_images=args.num_images,
        num_val=args.num_val,
        img_size=args.img_size,
        seed=args.seed)


def _cached_meta(path: str) -> Optional[dict]:
    """The ``meta`` of an existing checkpoint, or None."""
    if not osp.isfile(path):
        return None
    try:
        return torch.load(path, map_location='cpu').get('meta')
    except Exception:  # unreadable: train again
        return None


def pretrain(args: argparse.Namespace) -> dict:
    """Train, evaluate and save; return the checkpoint's ``meta``."""
    from toy_shapes21 import SOURCE_ATTRIBUTES
    attributes = {name: list(v) for name, v in SOURCE_ATTRIBUTES.items()}
    out = osp.abspath(osp.expanduser(args.out or default_output()))
    meta = _cached_meta(out)
    if not args.force and meta is not None \
            and meta.get('arguments') == _arguments(args) \
            and meta.get('source_attributes') == attributes:
        print(f'[pretrain] reusing {out} (source accuracy % per '
              f"attribute: {meta['val_accuracy']}); --force trains again")
        return dict(meta, path=out, reused=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    train_images, train_labels = make_images(args.num_images, args.img_size,
                                             args.seed, TRAIN_STREAM)
    val_images, val_labels = make_images(args.num_val, args.img_size,
                                         args.seed, VAL_STREAM)
    data_s = time.perf_counter() - start
    cfg = model_config()
    train_x, val_x = normalise(train_images, cfg), normalise(val_images, cfg)
    train_y = torch.from_numpy(train_labels).long()
    val_y = torch.from_numpy(val_labels).long()

    model = SourceSegmenter(build_backbone(cfg), source_num_classes())
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: (1 - it / args.iters)**0.9)
    generator = torch.Generator().manual_seed(args.seed)
    train_start = time.perf_counter()
    running = []
    for it in range(args.iters):
        index = torch.randint(
            len(train_x), (args.batch_size, ), generator=generator)
        images, targets = train_x[index], train_y[index]
        flip = torch.rand(args.batch_size, generator=generator) < 0.5
        images = torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
        targets = torch.where(
            flip.view(-1, 1, 1, 1), targets.flip(3), targets)
        loss = source_loss(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        running.append(loss.item())
        if (it + 1) % 100 == 0 or it + 1 == args.iters:
            elapsed = time.perf_counter() - train_start
            print(
                f'[pretrain] iter {it + 1}/{args.iters} loss '
                f'{np.mean(running):.3f} ({elapsed:.0f} s)',
                flush=True)
            running = []
    train_s = time.perf_counter() - train_start
    val_accuracy = dict(zip(attributes, accuracy(model, val_x, val_y, 64)))
    chance = {
        name: round(100. / len(values), 1)
        for name, values in attributes.items()
    }
    meta = dict(
        arguments=_arguments(args),
        source_attributes=attributes,
        val_accuracy=val_accuracy,
        chance_accuracy=chance,
        data_seconds=round(data_s, 1),
        train_seconds=round(train_s, 1),
        threads=args.threads,
        model_config=MODEL_CONFIG,
        torch=str(torch.__version__))
    os.makedirs(osp.dirname(out), exist_ok=True)
    state = {
        key: value.detach().clone()
        for key, value in model.backbone.state_dict().items()
    }
    tmp = out + '.tmp'
    torch.save(dict(state_dict=state, meta=meta), tmp)
    os.replace(tmp, out)
    print(f'[pretrain] pixel accuracy on the objects of {args.num_val} '
          f'held-out images, per attribute: {val_accuracy} (chance '
          f'{chance}); data {data_s:.0f} s, training {train_s:.0f} s; '
          f'wrote {out}')
    print(json.dumps(meta['arguments']))
    return dict(meta, path=out, reused=False)


def main(argv: Optional[List[str]] = None) -> dict:
    return pretrain(parse_args(argv))


if __name__ == '__main__':
    main()
