# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Shared helpers of the semi-supervised tests.

* :func:`toy_data_root`: a pytest fixture with a tiny ToyShapes dataset
  (64 train / 16 val images of 32 px), generated once per test session into
  the session's temporary folder; :func:`make_toy_dataset` does the same for
  any folder.
* :func:`tiny_segmentor_cfg` / :func:`tiny_u2pl_cfg`: a DeepLabV3+ student
  small enough for unit tests on CPU (ResNetV1c-18 with 8 base channels, d8,
  ``DepthwiseSeparableASPPHead``, BN) and the U2PL model around it.
* :func:`make_semi_batch`, :func:`set_train_progress`: preprocessed batches
  and the MessageHub information a training loop would provide.
* :func:`one_thread`: a fixture running a test with one torch thread.
* :func:`toy_train_cfg_options`, :func:`toy_runner_cfg`: overrides for very
  short trainings of the toy U2PL configs (``--cfg-options`` or an
  in-process ``Runner``); :func:`write_hooked_u2pl_config`: the toy U2PL
  config with test-only hooks.

Import it from a test module as ``from toy_fixtures import ...``: the
directory of ``tests/conftest.py`` is on ``sys.path`` under pytest.
"""
import copy
import os.path as osp
from typing import Dict, List, Optional, Tuple

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.logging import MessageHub
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from mmseg_u2pl.utils.misc import WARMUP_ITERS_KEY

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
U2PL_CONFIG = osp.join(
    REPO_ROOT, 'configs', 'u2pl',
    'u2pl_deeplabv3plus_r18-d8_1xb4+4-2k_toy-1-16-64x64.py')
U2PL_NOCONTRAST_CONFIG = osp.join(
    REPO_ROOT, 'configs', 'u2pl',
    'u2pl-nocontrast_deeplabv3plus_r18-d8_1xb4+4-2k_toy-1-16-64x64.py')

#: Arguments of the tiny toy dataset shared by the tests.
TOY_ARGS = dict(num_train=64, num_val=16, img_size=32, seed=0)
NUM_CLASSES = 6
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
NORM_CFG = dict(type='BN', requires_grad=True)


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
def make_toy_dataset(out_dir: str) -> str:
    """Generate (or reuse) the tiny toy dataset in ``out_dir``.

    Returns:
        str: ``out_dir``, the ``data_root`` of the configs.
    """
    from toy_shapes import generate_toy_dataset
    generate_toy_dataset(out_dir, **TOY_ARGS)
    return out_dir


@pytest.fixture(scope='session')
def toy_data_root(tmp_path_factory) -> str:
    """The tiny toy dataset, generated once per session.

    The folder is derived from the session's base temporary folder and the
    generator reuses a complete dataset with the same arguments, so modules
    that import this fixture share one copy.
    """
    return make_toy_dataset(
        str(tmp_path_factory.getbasetemp() / 'toy_shapes_32px'))


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (restored afterwards).

    The tiny networks are far faster single-threaded on a busy machine.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_split(data_root: str, name: str) -> List[str]:
    """Sample names listed in ``splits/<name>.txt``."""
    with open(osp.join(data_root, 'splits', name + '.txt')) as f:
        return [line.strip() for line in f if line.strip()]


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------
def tiny_data_preprocessor_cfg(size: Optional[Tuple[int,
                                                    int]] = (32, 32)) -> dict:
    """The mmseg ``SegDataPreProcessor`` settings of the toy configs."""
    return dict(
        type='SegDataPreProcessor',
        mean=list(MEAN),
        std=list(STD),
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=size)


def tiny_segmentor_cfg(num_classes: int = NUM_CLASSES,
                       dropout_ratio: float = 0.1) -> dict:
    """A plain mmseg ``EncoderDecoder`` (DeepLabV3+, ResNetV1c-18, d8).

    Stage channels 8/16/32/64, output stride 8, BN (not SyncBN). A
    ``ConfigDict``, as in a loaded config (mmseg reads ``test_cfg.mode``).
    """
    return ConfigDict(
        type='EncoderDecoder',
        data_preprocessor=tiny_data_preprocessor_cfg(),
        backbone=dict(
            type='ResNetV1c',
            depth=18,
            stem_channels=8,
            base_channels=8,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            dilations=(1, 1, 2, 4),
            strides=(1, 2, 1, 1),
            norm_cfg=NORM_CFG,
            norm_eval=False,
            style='pytorch',
            contract_dilation=True),
        decode_head=dict(
            type='DepthwiseSeparableASPPHead',
            in_channels=64,
            in_index=3,
            channels=16,
            dilations=(1, 2, 3),
            c1_in_channels=8,
            c1_channels=4,
            dropout_ratio=dropout_ratio,
            num_classes=num_classes,
            norm_cfg=NORM_CFG,
            align_corners=False,
            loss_decode=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))


def tiny_u2pl_cfg(with_contrast: bool = False,
                  num_classes: int = NUM_CLASSES,
                  memory_size: int = 64,
                  **semi_train_cfg) -> dict:
    """A ``U2PL`` model config around :func:`tiny_segmentor_cfg`.

    Args:
        with_contrast (bool): Add the representation head and the
            unreliable-pixel contrastive loss. Defaults to False.
        num_classes (int): Classes of the decode head. Defaults to 6.
        memory_size (int): Memory bank size per class. Defaults to 64.
        **semi_train_cfg: Entries of ``semi_train_cfg``.
    """
    cfg = ConfigDict(
        type='U2PL',
        segmentor=tiny_segmentor_cfg(num_classes),
        semi_train_cfg=semi_train_cfg,
        semi_test_cfg=dict(predict_on='teacher'))
    if with_contrast:
        cfg['representation_head'] = dict(
            type='RepresentationHead',
            channels=8,
            out_channels=8,
            norm_cfg=NORM_CFG)
        cfg['contrastive_loss'] = dict(
            type='UnreliableContrastiveLoss',
            memory_size=memory_size,
            num_anchors=16,
            num_negatives=8,
            rank_low=2,
            rank_high=num_classes,
            loss_weight=0.1)
    return cfg


def build_model(cfg: dict, seed: int = 0):
    """Build a model config in mmseg's scope with a fixed seed.

    PyTorch's default initialisation is kept (``init_weights`` only logs a
    lot here and adds nothing the tests need).
    """
    import mmseg_u2pl  # noqa: F401  (registers our modules)
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(copy.deepcopy(cfg))
    return model


def set_semi(active: bool) -> MessageHub:
    """Make the segmentors' losses semi-supervised (or the warm-up's).

    Publishes a warm-up length as ``MeanTeacherHook`` does (0, or one no
    iteration reaches) and an iteration when none is recorded yet.
    """
    hub = MessageHub.get_current_instance()
    hub.update_info(WARMUP_ITERS_KEY, 0 if active else 2**62)
    if hub.get_info('iter') is None:
        hub.update_info('iter', 0)
    return hub


def set_warmup(t_w: Optional[int]) -> MessageHub:
    """Publish the warm-up length ``t_w`` as ``MeanTeacherHook`` does."""
    hub = MessageHub.get_current_instance()
    hub.update_info(WARMUP_ITERS_KEY, t_w)
    return hub


def set_train_progress(cur_iter: int, max_iters: int) -> MessageHub:
    """Record ``iter`` / ``max_iters`` as mmengine's RuntimeInfoHook does."""
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', cur_iter)
    hub.update_info('max_iters', max_iters)
    return hub


# ---------------------------------------------------------------------------
# batches
# ---------------------------------------------------------------------------
def make_sample(label: Optional[torch.Tensor],
                size: Tuple[int, int],
                img_shape: Optional[Tuple[int, int]] = None) -> SegDataSample:
    """A ``SegDataSample`` as the data preprocessor returns it."""
    img_shape = tuple(img_shape or size)
    sample = SegDataSample()
    sample.set_metainfo(
        dict(
            img_shape=img_shape,
            ori_shape=img_shape,
            pad_shape=tuple(size),
            padding_size=[
                0, size[1] - img_shape[1], 0, size[0] - img_shape[0]
            ]))
    if label is not None:
        sample.gt_sem_seg = PixelData(data=label.long()[None])
    return sample


def make_semi_batch(num_labeled: int = 2,
                    num_unlabeled: int = 2,
                    size: int = 32,
                    num_classes: int = NUM_CLASSES,
                    with_unlabeled_gt: bool = True,
                    seed: int = 0) -> Tuple[Dict, Dict]:
    """Preprocessed ``inputs`` and ``data_samples`` of a semi batch.

    Images are normalised-looking random tensors; labels are random class
    maps with a few ignored (255) pixels.
    """
    gen = torch.Generator().manual_seed(seed)
    shape = (size, size)
    inputs, data_samples = {}, {}
    for branch, num in (('labeled', num_labeled), ('unlabeled',
                                                   num_unlabeled)):
        inputs[branch] = torch.randn(num, 3, size, size, generator=gen)
        labels = torch.randint(
            0, num_classes, (num, size, size), generator=gen)
        labels[:, :2, :2] = 255
        with_gt = branch == 'labeled' or with_unlabeled_gt
        data_samples[branch] = [
            make_sample(labels[i] if with_gt else None, shape)
            for i in range(num)
        ]
    return inputs, data_samples


# ---------------------------------------------------------------------------
# short trainings
# ---------------------------------------------------------------------------
def toy_train_cfg_options(data_root: str,
                          max_iters: int = 6,
                          val_interval: int = 3,
                          warmup_iters: int = 2,
                          with_contrast: bool = False) -> Dict[str, object]:
    """Overrides of the toy U2PL configs for a few iterations on 32 px.

    Keys are dotted config paths as for ``--cfg-options``; values are Python
    objects (see :func:`as_cli_options` for the command line).
    """
    options = {
        'train_dataloader.dataset.labeled.data_root': data_root,
        'train_dataloader.dataset.unlabeled.data_root': data_root,
        'val_dataloader.dataset.data_root': data_root,
        'test_dataloader.dataset.data_root': data_root,
        'train_cfg.max_iters': max_iters,
        'train_cfg.val_interval': val_interval,
        'custom_hooks.0.warmup_iters': warmup_iters,
        'default_hooks.checkpoint.interval': val_interval,
        'default_hooks.checkpoint.max_keep_ckpts': 4,
        'default_hooks.logger.interval': 1,
        # the Runner passes the top-level one to the model
        'data_preprocessor.size': (32, 32),
        'model.segmentor.data_preprocessor.size': (32, 32),
        'train_dataloader.dataset.labeled.pipeline.3.crop_size': (32, 32),
        'train_dataloader.dataset.unlabeled.pipeline.3.crop_size': (32, 32),
        'train_dataloader.dataset.labeled.pipeline.2.scale': (32, 32),
        'train_dataloader.dataset.unlabeled.pipeline.2.scale': (32, 32),
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'test_dataloader.num_workers': 0,
        'test_dataloader.persistent_workers': False,
    }
    if with_contrast:
        options['model.contrastive_loss.memory_size'] = 64
        options['model.contrastive_loss.num_anchors'] = 32
    return options


def write_hooked_u2pl_config(folder: str, module_name: str, module_source: str,
                             hooks: List[str]) -> str:
    """A toy U2PL config whose ``custom_hooks`` include test-only hooks.

    Writes ``<folder>/<module_name>.py`` (the hooks' source) and a config
    inheriting :data:`U2PL_CONFIG` that imports it and sets ``custom_hooks``
    to ``hooks`` (Python source of each entry, in order). Put ``folder`` on
    ``PYTHONPATH`` for the run.

    Returns:
        str: The config file.
    """
    with open(osp.join(folder, f'{module_name}.py'), 'w') as f:
        f.write(module_source)
    config = osp.join(folder, f'{module_name}_config.py')
    entries = ''.join(f'    {hook},\n' for hook in hooks)
    with open(config, 'w') as f:
        f.write(f"_base_ = [{U2PL_CONFIG!r}]\n"
                f"custom_imports = dict(\n"
                f"    imports=['mmseg_u2pl', {module_name!r}],\n"
                f"    allow_failed_imports=False)\n"
                f"custom_hooks = [\n{entries}]\n")
    return config


def toy_runner_cfg(config: str, work_dir: str, options: Dict[str, object]):
    """Load a toy config for an in-process ``Runner`` as tools/train.py does.

    Args:
        config (str): Config file.
        work_dir (str): Work directory.
        options (dict): Overrides (see :func:`toy_train_cfg_options`).

    Returns:
        Config: Merged, adapted to this machine (SyncBN -> BN without CUDA),
        with a visualizer name of its own (the visualizer is a per-name
        singleton within a process).
    """
    import mmseg_u2pl  # noqa: F401  (registers our modules)
    from mmengine.config import Config
    from mmseg_u2pl.utils.launch import prepare_launch
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(dict(options))
    cfg.work_dir = work_dir
    cfg.visualizer.name = f'visualizer_{osp.basename(work_dir)}'
    prepare_launch(cfg, 'none')
    return cfg


def as_cli_options(options: Dict[str, object]) -> List[str]:
    """``key=value`` strings for ``--cfg-options`` (no white space)."""
    out = []
    for key, value in options.items():
        if isinstance(value, tuple):
            value = '(' + ','.join(str(v) for v in value) + ')'
        out.append(f'{key}={value}')
    return out
