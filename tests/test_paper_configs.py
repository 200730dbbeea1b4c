# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""The paper's configs: settings, data against a fake tree, one train step.

Covers ``configs/voc``, ``configs/cityscapes``, ``configs/gta2cityscapes``
and ``configs/backbones`` (``tests/test_configs.py`` skips them: the paper
networks are too large to build once per config there).

* Per-split configs are compared as dicts: siblings differ only by their
  split paths, and supervised baselines share network, data pipeline and
  schedule with their U2PL sibling.
* The paper settings (Sec. 3-4 and the reference configs) are checked
  value by value.
* Every train/val dataset is built against a small fake directory tree in
  the VOC / Cityscapes / GTA5 layouts, and samples are loaded through the
  real pipelines.
* Each network is built once per architecture (SyncBN -> BN, no pretrained
  weights), runs one training iteration on 2 + 2 images of 64x64 and one
  validation step on a fake validation image.
* Bad input (missing image, overlapping lists, Cityscapes label ids instead
  of train ids) must fail with the file and line named.
"""
import copy
import glob
import importlib
import importlib.util
import os
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import DATASETS, MODELS
from mmseg.structures import SegDataSample
from PIL import Image
from split_utils import check_split
from toy_fixtures import one_thread  # noqa: F401  (pytest fixture)
from toy_fixtures import set_semi

import mmseg_u2pl  # noqa: F401  (registers the package's modules)
from mmseg_u2pl.utils.launch import convert_sync_bn

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(ROOT, 'configs')
SIZE = 64

VOC_SPLITS = dict(
    classic=(92, 183, 366, 732, 1464), blender=(662, 1323, 2646, 5291))
CITYSCAPES_SPLITS = (186, 372, 744, 1488)


def voc_config(n: int, u2pl: bool = True) -> str:
    setting = 'classic' if n in VOC_SPLITS['classic'] else 'blender'
    if u2pl:
        name = (f'u2pl_deeplabv3plus_r101-d8_4xb4+4-80e_voc-{setting}-{n}'
                '-513x513.py')
    else:
        name = f'deeplabv3plus_r101-d8_4xb4-80e_voc-{setting}-{n}-513x513.py'
    return osp.join(CONFIG_DIR, 'voc', name)


def cityscapes_config(n: int, u2pl: bool = True) -> str:
    if u2pl:
        name = (f'u2pl_deeplabv3plus_r101-d8_8xb2+2-200e_cityscapes-{n}'
                '-769x769.py')
    else:
        name = f'deeplabv3plus_r101-d8_8xb2-200e_cityscapes-{n}-769x769.py'
    return osp.join(CONFIG_DIR, 'cityscapes', name)


GTA_U2PL = osp.join(
    CONFIG_DIR, 'gta2cityscapes',
    'u2pl_deeplabv3plus_r101-d8_8xb2+2-200e_gta2cityscapes-769x769.py')
GTA_SOURCE_ONLY = osp.join(
    CONFIG_DIR, 'gta2cityscapes',
    'deeplabv3plus_r101-d8_8xb2-24e_gta2cityscapes-sourceonly-769x769.py')
BACKBONES = dict(
    r50=osp.join(
        CONFIG_DIR, 'backbones',
        'u2pl_deeplabv3plus_r50-d8_4xb4+4-80e_voc-classic-366-513x513.py'),
    segformer=osp.join(
        CONFIG_DIR, 'backbones',
        'u2pl_segformer_mit-b2_4xb4+4-80e_voc-classic-366-513x513.py'),
    convnext=osp.join(
        CONFIG_DIR, 'backbones',
        'u2pl_deeplabv3plus_convnext-t_4xb4+4-80e_voc-classic-366-513x513.py'),
)
ALL_PAPER_CONFIGS = ([
    voc_config(n, u) for ns in VOC_SPLITS.values() for n in ns
    for u in (True, False)
] + [
    cityscapes_config(n, u) for n in CITYSCAPES_SPLITS for u in (True, False)
] + [GTA_U2PL, GTA_SOURCE_ONLY] + list(BACKBONES.values()))


def load(path: str, **kwargs) -> Config:
    init_default_scope('mmseg')
    return Config.fromfile(path, **kwargs)


# ---------------------------------------------------------------------------
# the fake data tree
# ---------------------------------------------------------------------------
VOC_TRAIN = [
    '2007_000032', '2007_000039', '2007_000063', '2007_000068', '2007_000121'
]
VOC_VAL = ['2007_000033']
CITY_TRAIN = [
    'aachen/aachen_000000_000019', 'aachen/aachen_000001_000019',
    'bochum/bochum_000000_000313', 'bremen/bremen_000000_000019'
]
CITY_VAL = ['frankfurt/frankfurt_000000_000294']
GTA = ['00001', '00002']
NUM_LABELED = 2  # every fake split: the first 2 training images labeled


def _image(path: str, size, seed: int) -> None:
    """A random RGB image (``size`` is width, height)."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _label(path: str, size, values, seed: int) -> None:
    """A single-channel label map drawing from ``values``."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    label = rng.choice(np.asarray(values, np.uint8), (size[1], size[0]))
    Image.fromarray(label, mode='L').save(path)


def _lines(path: str, entries) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.writelines(f'{entry}\n' for entry in entries)


def make_fake_tree(root: str) -> str:
    """Tiny VOC / Cityscapes / GTA5 trees and split lists below ``root``."""
    voc = osp.join(root, 'VOCdevkit', 'VOC2012')
    for i, name in enumerate(VOC_TRAIN + VOC_VAL):
        _image(osp.join(voc, 'JPEGImages', f'{name}.jpg'), (64, 48), i)
        folder = 'SegmentationClass' if name in VOC_VAL else \
            'SegmentationClassAug'
        _label(
            osp.join(voc, folder, f'{name}.png'), (64, 48), [0, 1, 15, 255], i)
    _lines(osp.join(voc, 'ImageSets', 'Segmentation', 'val.txt'), VOC_VAL)
    for n in VOC_SPLITS['classic'] + VOC_SPLITS['blender']:
        _lines(
            osp.join(root, 'splits', 'voc', str(n), 'labeled.txt'),
            VOC_TRAIN[:NUM_LABELED])
        _lines(
            osp.join(root, 'splits', 'voc', str(n), 'unlabeled.txt'),
            VOC_TRAIN[NUM_LABELED:])

    city = osp.join(root, 'cityscapes')
    for subset, names in (('train', CITY_TRAIN), ('val', CITY_VAL)):
        for i, name in enumerate(names):
            _image(
                osp.join(city, 'leftImg8bit', subset,
                         f'{name}_leftImg8bit.png'), (128, 64), i)
            _label(
                osp.join(city, 'gtFine', subset,
                         f'{name}_gtFine_labelTrainIds.png'), (128, 64),
                [0, 2, 13, 18, 255], i)
    for n in CITYSCAPES_SPLITS:
        _lines(
            osp.join(root, 'splits', 'cityscapes', str(n), 'labeled.txt'),
            CITY_TRAIN[:NUM_LABELED])
        _lines(
            osp.join(root, 'splits', 'cityscapes', str(n), 'unlabeled.txt'),
            CITY_TRAIN[NUM_LABELED:])

    for i, name in enumerate(GTA):
        _image(osp.join(root, 'gta', 'images', f'{name}.png'), (96, 53), i)
        # raw GTA5 labels hold Cityscapes label ids; the converted ones
        # train ids
        _label(
            osp.join(root, 'gta', 'labels', f'{name}.png'), (96, 53),
            [7, 26, 0], i)
        _label(
            osp.join(root, 'gta', 'labels', f'{name}_labelTrainIds.png'),
            (96, 53), [0, 13, 255], i)
    return root


@pytest.fixture(scope='module')
def fake_root(tmp_path_factory):
    return make_fake_tree(str(tmp_path_factory.mktemp('paper_data')))


def _datasets(cfg: Config):
    """The dataset configs of the train/val/test dataloaders."""
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[key]['dataset']
        if dataset['type'] == 'SemiDataset':
            yield key, dataset['labeled']
            yield key, dataset['unlabeled']
        else:
            yield key, dataset


def set_data_root(cfg: Config, root: str) -> Config:
    for _, dataset in _datasets(cfg):
        dataset['data_root'] = root
    return cfg


def build_dataset(cfg: Config, key: str):
    init_default_scope('mmseg')
    return DATASETS.build(copy.deepcopy(cfg[key]['dataset']))


# ---------------------------------------------------------------------------
# configs: siblings differ only where they should
# ---------------------------------------------------------------------------
def test_every_paper_config_exists():
    missing = [p for p in ALL_PAPER_CONFIGS if not osp.isfile(p)]
    assert not missing
    # and no stray config in the paper folders escapes this test file
    found = {
        p
        for d in ('voc', 'cityscapes', 'gta2cityscapes', 'backbones')
        for p in glob.glob(osp.join(CONFIG_DIR, d, '*.py'))
    }
    assert found == set(ALL_PAPER_CONFIGS)


def _without_split_paths(cfg: Config, family: str) -> dict:
    """The config as a dict with its split list paths blanked out."""
    d = cfg.to_dict()
    dataset = d['train_dataloader']['dataset']
    sides = [dataset['labeled'], dataset['unlabeled']] if \
        dataset['type'] == 'SemiDataset' else [dataset]
    for side in sides:
        assert re.fullmatch(rf'splits/{family}/\d+/(un)?labeled\.txt',
                            side['ann_file']), side['ann_file']
        side['ann_file'] = None
    return d


@pytest.mark.parametrize('u2pl', [True, False], ids=['u2pl', 'supervised'])
@pytest.mark.parametrize('family', ['voc', 'cityscapes'])
def test_split_siblings_differ_only_by_split_paths(family, u2pl):
    if family == 'voc':
        paths = {
            n: voc_config(n, u2pl)
            for ns in VOC_SPLITS.values()
            for n in ns
        }
    else:
        paths = {n: cityscapes_config(n, u2pl) for n in CITYSCAPES_SPLITS}
    reference = None
    for n, path in paths.items():
        cfg = load(path)
        dataset = cfg.train_dataloader.dataset
        if u2pl:
            assert dataset.labeled.ann_file == \
                f'splits/{family}/{n}/labeled.txt'
            assert dataset.unlabeled.ann_file == \
                f'splits/{family}/{n}/unlabeled.txt'
        else:
            assert dataset.ann_file == f'splits/{family}/{n}/labeled.txt'
        stripped = _without_split_paths(cfg, family)
        if reference is None:
            reference = stripped
        assert stripped == reference, f'{path} differs beyond split paths'


@pytest.mark.parametrize('sup_path,u2pl_path', [
    (voc_config(366, False), voc_config(366)),
    (cityscapes_config(744, False), cityscapes_config(744)),
    (GTA_SOURCE_ONLY, GTA_U2PL),
])
def test_supervised_baseline_shares_network_data_and_optimiser(
        sup_path, u2pl_path):
    sup, u2pl = load(sup_path), load(u2pl_path)
    assert sup.model.to_dict() == u2pl.model.segmentor.to_dict()
    assert sup.optim_wrapper == u2pl.optim_wrapper
    assert sup.train_dataloader.batch_size == \
        u2pl.train_dataloader.batch_size
    assert sup.train_dataloader.dataset.to_dict() == \
        u2pl.train_dataloader.dataset.labeled.to_dict()
    assert sup.val_dataloader == u2pl.val_dataloader
    assert sup.val_cfg.type == 'ValLoop'
    assert u2pl.val_cfg.type == 'TeacherStudentValLoop'
    if sup_path != GTA_SOURCE_ONLY:  # same epochs (over their own sets)
        assert sup.train_cfg == u2pl.train_cfg
        assert sup.param_scheduler == u2pl.param_scheduler


def _paper_network_checks(student: dict, num_classes: int) -> None:
    backbone = student.backbone
    assert backbone.type == 'ResNetV1c' and backbone.depth == 101
    assert backbone.stem_channels == 128
    assert backbone.strides == (1, 2, 1, 1)
    assert backbone.dilations == (1, 1, 2, 4)
    assert backbone.multi_grid == (4, 8, 16)
    assert backbone.contract_dilation is True
    assert backbone.norm_cfg.type == 'SyncBN'
    assert backbone.init_cfg.type == 'Pretrained'
    head = student.decode_head
    assert head.type == 'DeepLabV3PlusHead'
    assert head.dilations == (12, 24, 36)
    assert (head.channels, head.c1_channels, head.classifier_channels) == \
        (256, 256, 256)
    assert head.num_classes == num_classes
    assert head.dropout_ratio == 0.1
    assert head.norm_cfg.type == 'SyncBN'


def test_voc_settings_are_the_papers():
    cfg = load(voc_config(92))
    model = cfg.model
    assert model.type == 'U2PL'
    _paper_network_checks(model.segmentor, 21)
    assert model.segmentor.test_cfg == dict(mode='whole')
    assert 'auxiliary_head' not in model.segmentor
    assert model.segmentor.decode_head.get('sampler') is None  # plain CE
    assert model.representation_head.out_channels == 256
    assert model.representation_head.channels == 256
    loss = model.contrastive_loss
    assert loss.memory_size == [50000] + [30000] * 20
    assert (loss.num_anchors, loss.num_negatives, loss.temperature,
            loss.delta_p, loss.rank_low, loss.rank_high,
            loss.loss_weight) == (256, 50, 0.5, 0.3, 3, 20, 0.1)
    assert model.semi_train_cfg == dict(
        unsup_weight=1.0,
        alpha_0=20,
        cutmix=dict(prob=0.5, area_ratio=0.5, per_sample=False))
    assert model.semi_test_cfg.predict_on == 'teacher'
    # data: 4 GPUs x (4 + 4), crop 513, whole-image single-scale val
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.train_dataloader.drop_last is True
    assert cfg.train_dataloader.dataset.type == 'SemiDataset'
    for side in ('labeled', 'unlabeled'):
        pipeline = cfg.train_dataloader.dataset[side].pipeline
        resize = [t for t in pipeline if t.type == 'RandomResize'][0]
        assert resize.ratio_range == (0.5, 2.0)
        assert [t.crop_size for t in pipeline
                if t.type == 'RandomCrop'] == [(513, 513)]
        assert [t.prob for t in pipeline if t.type == 'RandomFlip'] == [0.5]
    unlabeled = cfg.train_dataloader.dataset.unlabeled
    assert unlabeled.data_prefix == dict(
        img_path='VOCdevkit/VOC2012/JPEGImages')
    assert 'LoadAnnotations' not in [t.type for t in unlabeled.pipeline]
    assert [t.type for t in cfg.val_dataloader.dataset.pipeline
            ] == ['LoadImageFromFile', 'LoadAnnotations', 'PackSegInputs']
    assert model.segmentor.data_preprocessor.size == (513, 513)
    assert model.segmentor.data_preprocessor.seg_pad_val == 255
    assert model.segmentor.data_preprocessor.pad_val == 0
    # optimisation: SGD 0.001 (decoder, representation head x10), wd 1e-4,
    # poly 0.9 per iteration, 80 epochs, 1 epoch warm-up
    optim = cfg.optim_wrapper
    assert optim.optimizer == dict(
        type='SGD', lr=0.001, momentum=0.9, weight_decay=1e-4)
    assert optim.paramwise_cfg.custom_keys == {
        'decode_head': dict(lr_mult=10.),
        'representation_head': dict(lr_mult=10.)
    }
    _poly_checks(cfg, 80)
    assert dict(
        type='MeanTeacherHook', warmup_epochs=1,
        max_decay=0.99) in cfg.custom_hooks
    assert cfg.val_cfg.type == 'TeacherStudentValLoop'
    assert cfg.default_hooks.checkpoint.save_best == 'teacher/mIoU'
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)


def _poly_checks(cfg: Config, epochs: int) -> None:
    assert cfg.train_cfg == dict(
        type='EpochBasedTrainLoop',
        max_epochs=epochs,
        val_interval=cfg.train_cfg.val_interval)
    [poly] = cfg.param_scheduler
    assert poly.type == 'PolyLR' and poly.power == 0.9
    assert poly.eta_min == 0. and poly.end == epochs
    assert poly.by_epoch and poly.convert_to_iter_based


def test_cityscapes_settings_are_the_papers():
    cfg = load(cityscapes_config(186))
    model = cfg.model
    student = model.segmentor
    _paper_network_checks(student, 19)
    # OHEM 0.7 / 100000 per GPU batch of 2 labeled images on both heads
    ohem = dict(type='OHEMPixelSampler', thresh=0.7, min_kept=50000)
    assert student.decode_head.sampler == ohem
    # averaged over the kept pixels, as the reference's OHEM
    loss = student.decode_head.loss_decode
    assert (loss.type, loss.loss_weight) == ('OHEMCrossEntropyLoss', 1.0)
    aux = student.auxiliary_head
    assert (aux.loss_decode.type,
            aux.loss_decode.loss_weight) == ('OHEMCrossEntropyLoss', 0.4)
    assert (aux.type, aux.in_channels, aux.in_index, aux.channels,
            aux.num_classes) == ('FCNHead', 1024, 2, 256, 19)
    assert aux.loss_decode.loss_weight == 0.4
    assert aux.sampler == ohem
    assert student.test_cfg == dict(
        mode='slide', crop_size=(769, 769), stride=(513, 513))
    assert student.data_preprocessor.size == (769, 769)
    assert model.contrastive_loss.memory_size == [50000] + [30000] * 18
    assert cfg.train_dataloader.batch_size == 2  # 8 GPUs x (2 + 2)
    for side in ('labeled', 'unlabeled'):
        pipeline = cfg.train_dataloader.dataset[side].pipeline
        assert [t.crop_size for t in pipeline
                if t.type == 'RandomCrop'] == [(769, 769)]
    val = cfg.val_dataloader.dataset
    assert val.data_prefix.img_path == 'cityscapes/leftImg8bit/val'
    assert 'Resize' not in [t.type for t in val.pipeline]  # full 1024x2048
    assert cfg.optim_wrapper.optimizer == dict(
        type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4)
    assert 'paramwise_cfg' not in cfg.optim_wrapper  # heads x1
    _poly_checks(cfg, 200)
    assert dict(
        type='MeanTeacherHook', warmup_epochs=0,
        max_decay=0.99) in cfg.custom_hooks
    assert cfg.default_hooks.checkpoint.save_best == 'teacher/mIoU'


def test_gta2cityscapes_differs_from_cityscapes_by_the_labeled_side():
    gta, city = load(GTA_U2PL), load(cityscapes_config(744))
    assert gta.model == city.model
    assert gta.val_dataloader == city.val_dataloader
    assert gta.train_cfg == city.train_cfg
    labeled = gta.train_dataloader.dataset.labeled
    assert labeled.type == 'CityscapesDataset'  # the 19 Cityscapes classes
    assert labeled.data_prefix == dict(
        img_path='gta/images', seg_map_path='gta/labels')
    assert labeled.seg_map_suffix == '_labelTrainIds.png'
    unlabeled = gta.train_dataloader.dataset.unlabeled
    assert unlabeled.ann_file == ''  # all Cityscapes training images
    expected = city.train_dataloader.dataset.unlabeled.to_dict()
    expected['ann_file'] = ''
    assert unlabeled.to_dict() == expected
    source_only = load(GTA_SOURCE_ONLY)
    assert source_only.train_dataloader.dataset.to_dict() == \
        labeled.to_dict()
    assert source_only.train_cfg.max_epochs == 24
    assert source_only.param_scheduler[0].end == 24


def test_backbone_configs_change_only_the_student():
    base = load(voc_config(366))
    for name, path in BACKBONES.items():
        cfg = load(path, import_custom_modules=False)
        assert cfg.train_dataloader == base.train_dataloader
        assert cfg.train_cfg == base.train_cfg
        for key in ('representation_head', 'contrastive_loss',
                    'semi_train_cfg', 'semi_test_cfg'):
            assert cfg.model[key] == base.model[key], (name, key)
        backbone = cfg.model.segmentor.backbone
        if name == 'r50':
            assert (backbone.type, backbone.depth) == ('ResNetV1c', 50)
            assert cfg.model.segmentor.decode_head == \
                base.model.segmentor.decode_head
        elif name == 'segformer':
            assert backbone.type == 'MixVisionTransformer'
            assert backbone.num_layers == [3, 4, 6, 3]  # MiT-B2
            assert cfg.model.segmentor.decode_head.type == 'SegformerHead'
        else:
            assert backbone.type == 'mmpretrain.ConvNeXt'
            assert backbone.arch == 'tiny'
            assert 'mmpretrain.models' in cfg.custom_imports.imports
            assert 'mmseg_u2pl' in cfg.custom_imports.imports
            # ConvNeXt-T stage channels: 96, 192, 384, 768
            head = cfg.model.segmentor.decode_head
            assert (head.c1_in_channels, head.in_channels) == (96, 768)


# ---------------------------------------------------------------------------
# datasets against the fake tree
# ---------------------------------------------------------------------------
def _check_semi_item(item: dict, crop: int) -> None:
    labeled, unlabeled = item['labeled'], item['unlabeled']
    assert 'gt_sem_seg' in labeled['data_samples']
    # no label file is read for unlabeled images
    assert 'gt_sem_seg' not in unlabeled['data_samples']
    for packed in (labeled, unlabeled):
        height, width = packed['inputs'].shape[-2:]
        assert height <= crop and width <= crop


@pytest.mark.parametrize(
    'path,crop,num_labeled,num_unlabeled', [
        (voc_config(92), 513, NUM_LABELED, len(VOC_TRAIN) - NUM_LABELED),
        (voc_config(5291), 513, NUM_LABELED, len(VOC_TRAIN) - NUM_LABELED),
        (cityscapes_config(186), 769, NUM_LABELED,
         len(CITY_TRAIN) - NUM_LABELED),
        (GTA_U2PL, 769, len(GTA), len(CITY_TRAIN)),
    ],
    ids=['voc-classic', 'voc-blender', 'cityscapes', 'gta2cityscapes'])
def test_semi_datasets_build_and_load(fake_root, path, crop, num_labeled,
                                      num_unlabeled):
    cfg = set_data_root(load(path), fake_root)
    train = build_dataset(cfg, 'train_dataloader')
    assert (len(train.labeled), len(train.unlabeled)) == (num_labeled,
                                                          num_unlabeled)
    assert len(train) == num_unlabeled  # an epoch: the unlabeled set
    assert train.labeled.metainfo['classes'] == \
        train.unlabeled.metainfo['classes']
    assert all('seg_map_path' not in info
               for info in train.unlabeled.data_list)
    _check_semi_item(train[0], crop)
    val = build_dataset(cfg, 'val_dataloader')
    assert len(val) == 1
    sample = val[0]['data_samples']
    # validation on the original image (slide / whole in the model)
    assert sample.gt_sem_seg.shape == tuple(sample.ori_shape)


@pytest.mark.parametrize(
    'path',
    [voc_config(1464, False),
     cityscapes_config(1488, False), GTA_SOURCE_ONLY],
    ids=['voc', 'cityscapes', 'gta'])
def test_supervised_datasets_build_and_load(fake_root, path):
    cfg = set_data_root(load(path), fake_root)
    train = build_dataset(cfg, 'train_dataloader')
    expected = len(GTA) if path == GTA_SOURCE_ONLY else NUM_LABELED
    assert len(train) == expected
    item = train[0]
    assert 'gt_sem_seg' in item['data_samples']
    assert len(build_dataset(cfg, 'val_dataloader')) == 1


# ---------------------------------------------------------------------------
# one training iteration per architecture
# ---------------------------------------------------------------------------
def packed_batch(num: int, num_classes: int, with_label: bool = True):
    gen = torch.Generator().manual_seed(num + num_classes)
    inputs, samples = [], []
    for _ in range(num):
        inputs.append(
            torch.randint(
                0, 256, (3, SIZE, SIZE), dtype=torch.uint8, generator=gen))
        sample = SegDataSample()
        if with_label:
            sample.gt_sem_seg = PixelData(
                data=torch.randint(
                    0, num_classes, (1, SIZE, SIZE), generator=gen))
        sample.set_metainfo(
            dict(
                img_shape=(SIZE, SIZE),
                ori_shape=(SIZE, SIZE),
                pad_shape=(SIZE, SIZE)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def model_cfg_for_test(cfg: Config) -> dict:
    """The config's model for a CPU test: BN, no weights, 64x64 batches."""
    model = copy.deepcopy(cfg.model)
    convert_sync_bn(model)
    student = model.get('segmentor', model)
    student.backbone.init_cfg = None  # never download in tests
    student.pretrained = None
    student.data_preprocessor.size = (SIZE, SIZE)
    return model


def _param(model, name: str) -> torch.Tensor:
    return dict(model.named_parameters())[name]


def run_one_iteration(cfg: Config, model) -> dict:
    """One train step on 2 (+ 2) images; returns the logged values."""
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 10)
    hub.update_info('max_iters', 100)
    semi = hasattr(model, 'teacher')
    student = model.student if semi else model
    num_classes = student.decode_head.num_classes
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    watched = [
        [n for n in trainable if 'backbone' in n][0],
        [n for n in trainable if 'decode_head.conv_seg' in n][-1],
    ]
    if semi:
        watched += [
            n for n, p in model.named_parameters()
            if 'student.representation_head' in n
        ][-1:]
        teacher_before = {
            n: p.detach().clone()
            for n, p in model.teacher.named_parameters()
        }
        data = dict(
            labeled=packed_batch(2, num_classes),
            unlabeled=packed_batch(2, num_classes, with_label=False))
        set_semi(True)
        model.semi_train_cfg['cutmix']['prob'] = 1.0  # run every part
    else:
        data = packed_batch(2, num_classes)
    before = {n: _param(model, n).detach().clone() for n in watched}
    model.train()
    log_vars = model.train_step(data, optim_wrapper)
    assert torch.isfinite(log_vars['loss'])
    for name in watched:
        assert not torch.equal(before[name], _param(model, name)), name
    if semi:
        assert 'unsup.loss_ce' in log_vars
        assert 'contrast.loss_contrast' in log_vars
        assert any(k.startswith('sup.') for k in log_vars)
        # the optimizer never touches the teacher
        for name, param in model.teacher.named_parameters():
            assert torch.equal(param, teacher_before[name]), name
    return log_vars


def run_val_step(cfg: Config, model, fake_root: str) -> None:
    """Predict one fake validation image with the config's test mode."""
    val = build_dataset(set_data_root(cfg, fake_root), 'val_dataloader')
    model.eval()
    with torch.no_grad():
        [result] = model.val_step(pseudo_collate([val[0]]))
    assert result.pred_sem_seg.shape == tuple(result.ori_shape)


def _lr_of(optim_wrapper, param: torch.Tensor) -> float:
    for group in optim_wrapper.optimizer.param_groups:
        if any(p is param for p in group['params']):
            return group['lr']
    raise KeyError('parameter not optimised')


@pytest.mark.usefixtures('one_thread')
def test_voc_u2pl_network_trains_one_iteration(fake_root):
    cfg = load(voc_config(92))
    torch.manual_seed(0)
    model = MODELS.build(model_cfg_for_test(cfg))
    model.init_weights()
    backbone = model.student.backbone
    # deep stem 3 -> 64 -> 64 -> 128
    assert [
        m.out_channels for m in backbone.stem
        if isinstance(m, torch.nn.Conv2d)
    ] == [64, 64, 128]
    assert len(backbone.layer3) == 23  # ResNet-101
    assert [b.conv2.dilation[0] for b in backbone.layer3] == [1] + [2] * 22
    assert [b.conv2.dilation[0] for b in backbone.layer4] == [4, 8, 16]
    with torch.no_grad():
        feats = backbone(torch.zeros(1, 3, SIZE, SIZE))
    assert [tuple(f.shape[1:]) for f in feats] == [(256, 16, 16), (512, 8, 8),
                                                   (1024, 8, 8),
                                                   (2048, 8, 8)]  # OS 8
    head = model.student.decode_head
    assert head.fused_channels == 512
    rep = model.student.representation_head
    assert (rep.in_channels, rep.out_channels) == (512, 256)
    capacity = model.contrastive_loss.memory_bank.capacity.tolist()
    assert capacity == [50000] + [30000] * 20

    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    lr = dict(
        backbone=_lr_of(optim_wrapper,
                        _param(model, 'student.backbone.stem.0.weight')),
        decoder=_lr_of(
            optim_wrapper,
            _param(model, 'student.decode_head.c1_bottleneck.conv.weight')),
        representation=_lr_of(
            optim_wrapper,
            next(model.student.representation_head.parameters())))
    assert lr == pytest.approx(
        dict(backbone=0.001, decoder=0.01, representation=0.01))
    del optim_wrapper

    run_one_iteration(cfg, model)
    run_val_step(cfg, model, fake_root)

    # the supervised baseline is the same student network
    sup_cfg = load(voc_config(92, False))
    assert model_cfg_for_test(sup_cfg) == model_cfg_for_test(cfg).segmentor
    sup_model = model.student
    run_one_iteration(sup_cfg, sup_model)
    run_val_step(sup_cfg, sup_model, fake_root)


@pytest.mark.usefixtures('one_thread')
def test_cityscapes_u2pl_network_trains_one_iteration(fake_root):
    cfg = load(cityscapes_config(186))
    torch.manual_seed(0)
    model = MODELS.build(model_cfg_for_test(cfg))
    model.init_weights()
    student = model.student
    assert student.with_auxiliary_head
    assert student.auxiliary_head.in_channels == 1024
    sampler = student.decode_head.sampler
    assert (type(sampler).__name__, sampler.thresh, sampler.min_kept) == \
        ('OHEMPixelSampler', 0.7, 50000)
    assert model.contrastive_loss.memory_bank.capacity.tolist() == \
        [50000] + [30000] * 18
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    lrs = {g['lr'] for g in optim_wrapper.optimizer.param_groups}
    assert lrs == {0.01}  # heads x1
    del optim_wrapper

    log_vars = run_one_iteration(cfg, model)
    assert 'sup.aux.loss_ce' in log_vars
    run_val_step(cfg, model, fake_root)  # slide inference

    # the supervised baseline and GTA5 -> Cityscapes use the same networks
    sup_cfg = load(cityscapes_config(186, False))
    assert model_cfg_for_test(sup_cfg) == model_cfg_for_test(cfg).segmentor
    assert model_cfg_for_test(load(GTA_U2PL)) == model_cfg_for_test(cfg)
    assert model_cfg_for_test(
        load(GTA_SOURCE_ONLY)) == model_cfg_for_test(sup_cfg)
    sup_model = model.student
    log_vars = run_one_iteration(sup_cfg, sup_model)
    assert 'aux.loss_ce' in log_vars
    run_val_step(sup_cfg, sup_model, fake_root)


def tiny_deeplab(student: Config) -> None:
    """The paper's DeepLabV3+ on a ResNet-18 with 8 base channels."""
    student.backbone.update(
        depth=18,
        stem_channels=16,
        base_channels=8,
        multi_grid=None,
        init_cfg=None)
    student.decode_head.update(
        in_channels=64,
        c1_in_channels=8,
        channels=16,
        c1_channels=16,
        classifier_channels=16)


def shrink_for_runner(cfg: Config, work_dir: str, size: int = SIZE) -> Config:
    """A few-second run of a paper config: tiny crops, memory bank and
    representation head, 2 epochs (the caller shrinks the student network).

    Everything else (loop, hooks, schedulers, validation loop, checkpoint
    rule, datasets and pipelines) stays as configured.
    """
    convert_sync_bn(cfg.model)
    student = cfg.model.segmentor
    student.data_preprocessor.size = (size, size)
    if 'data_preprocessor' in cfg:
        cfg.data_preprocessor.size = (size, size)
    if student.test_cfg.get('mode') == 'slide':
        student.test_cfg.update(crop_size=(size, size), stride=(size, size))
    cfg.model.contrastive_loss.memory_size = 100
    cfg.model.representation_head.update(channels=16, out_channels=16)
    dataset = cfg.train_dataloader.dataset
    for side in (dataset.labeled, dataset.unlabeled):
        for transform in side.pipeline:
            if transform.type == 'RandomResize':
                transform.scale = (size, size)
            if transform.type == 'RandomCrop':
                transform.crop_size = (size, size)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].update(num_workers=0, persistent_workers=False)
    cfg.train_dataloader.batch_size = 2
    cfg.train_cfg.update(max_epochs=2, val_interval=1)
    cfg.param_scheduler[0].end = 2
    cfg.default_hooks.checkpoint.interval = 1
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    # a fresh visualizer, not one left by another runner of this process
    cfg.visualizer.name = f'visualizer_{abs(hash(work_dir))}'
    return cfg


@pytest.mark.usefixtures('one_thread')
def test_voc_u2pl_epoch_schedule_runs_in_the_runner(tmp_path):
    """Epochs, warm-up epoch, teacher/student validation, best teacher."""
    from mmengine.runner import Runner
    root = make_fake_tree(str(tmp_path / 'data'))
    cfg = set_data_root(load(voc_config(92)), root)
    tiny_deeplab(cfg.model.segmentor)
    cfg = shrink_for_runner(cfg, str(tmp_path / 'work_paper_u2pl'))
    runner = Runner.from_cfg(cfg)
    runner.train()
    # 3 unlabeled images, 2 per batch, last partial batch dropped: one
    # iteration per epoch; the warm-up is one epoch = one iteration
    assert (runner.epoch, runner.iter) == (2, 2)
    [hook] = [h for h in runner.hooks if type(h).__name__ == 'MeanTeacherHook']
    assert hook.t_w == 1
    scalars = runner.message_hub.log_scalars
    assert 'train/unsup.loss_ce' in scalars  # the second epoch was semi
    assert 'val/teacher/mIoU' in scalars and 'val/student/mIoU' in scalars
    best = glob.glob(
        str(tmp_path / 'work_paper_u2pl' / 'best_teacher_mIoU_epoch_*.pth'))
    assert len(best) == 1


def mmpretrain_unavailable() -> str:
    """Why ``mmpretrain.models`` cannot be imported here ('' if it can)."""
    if importlib.util.find_spec('torchvision') is None:
        return ('torchvision is not installed, and mmpretrain.models imports '
                'it (mmpretrain/models/heads/cls_head.py -> '
                'mmpretrain.evaluation -> metrics/visual_grounding_eval.py: '
                '`import torchvision.ops.boxes`)')
    try:
        importlib.import_module('mmpretrain.models')
    except Exception as error:  # e.g. a CUDA torchvision on a CPU torch
        return (f'`import mmpretrain.models` fails: '
                f'{type(error).__name__}: {error}')
    return ''


@pytest.mark.parametrize('name', ['r50', 'segformer', 'convnext'])
@pytest.mark.usefixtures('one_thread')
def test_other_backbones_train_one_iteration(fake_root, name):
    if name == 'convnext':
        reason = mmpretrain_unavailable()
        assert not reason, (
            f'ConvNeXt (mmpretrain): {reason}. Run `bash tools/setup_env.sh`: '
            'it installs the torch and torchvision pair of requirements.txt.')
    cfg = load(BACKBONES[name])
    torch.manual_seed(0)
    model = MODELS.build(model_cfg_for_test(cfg))
    model.init_weights()
    expected_backbone = dict(
        r50='ResNetV1c', segformer='MixVisionTransformer',
        convnext='ConvNeXt')[name]
    assert type(model.student.backbone).__name__ == expected_backbone
    if name == 'r50':
        assert len(model.student.backbone.layer3) == 6
    if name == 'segformer':
        assert model.student.representation_head.in_channels == 256
    if name == 'convnext':
        assert type(
            model.student.backbone).__module__.startswith('mmpretrain.')
    run_one_iteration(cfg, model)
    run_val_step(cfg, model, fake_root)


# ---------------------------------------------------------------------------
# bad input, with the real configs
# ---------------------------------------------------------------------------
def test_missing_labeled_image_names_file_and_line(tmp_path):
    root = make_fake_tree(str(tmp_path))
    split = osp.join(root, 'splits', 'voc', '92', 'labeled.txt')
    _lines(split, VOC_TRAIN[:NUM_LABELED] + ['2099_000001'])
    cfg = set_data_root(load(voc_config(92)), root)
    with pytest.raises(FileNotFoundError) as error:
        build_dataset(cfg, 'train_dataloader')
    message = str(error.value)
    assert 'JPEGImages/2099_000001.jpg' in message
    assert f'line 3 of {split}' in message
    assert 'labeled' in message


def test_missing_unlabeled_image_names_file_and_line(tmp_path):
    root = make_fake_tree(str(tmp_path))
    split = osp.join(root, 'splits', 'cityscapes', '372', 'unlabeled.txt')
    missing = 'aachen/aachen_000099_000019'
    _lines(split, [missing] + CITY_TRAIN[NUM_LABELED:])
    cfg = set_data_root(load(cityscapes_config(372)), root)
    with pytest.raises(FileNotFoundError) as error:
        build_dataset(cfg, 'train_dataloader')
    message = str(error.value)
    assert f'leftImg8bit/train/{missing}_leftImg8bit.png' in message
    assert f'line 1 of {split}' in message
    assert 'train_dataloader.dataset.unlabeled' in message


def test_missing_voc_split_file_is_named(tmp_path):
    root = make_fake_tree(str(tmp_path))
    split = osp.join(root, 'splits', 'voc', '92', 'labeled.txt')
    os.remove(split)
    cfg = set_data_root(load(voc_config(92)), root)
    with pytest.raises(FileNotFoundError, match=re.escape(split)):
        build_dataset(cfg, 'train_dataloader')


def _overlapping_split(root: str) -> tuple:
    labeled = osp.join(root, 'splits', 'voc', '183', 'labeled.txt')
    unlabeled = osp.join(root, 'splits', 'voc', '183', 'unlabeled.txt')
    _lines(unlabeled, VOC_TRAIN[NUM_LABELED:] + [VOC_TRAIN[1]])
    return labeled, unlabeled


def test_overlapping_lists_of_a_config_are_reported(tmp_path):
    root = make_fake_tree(str(tmp_path))
    labeled, unlabeled = _overlapping_split(root)
    cfg = load(voc_config(183))
    dataset = cfg.train_dataloader.dataset
    # the paths the config reads, checked with the split checker
    with pytest.raises(ValueError) as error:
        check_split(
            osp.join(root, dataset.labeled.ann_file),
            osp.join(root, dataset.unlabeled.ann_file),
            data_root=root,
            img_path=dataset.labeled.data_prefix.img_path,
            img_suffix='.jpg')
    message = str(error.value)
    assert repr(VOC_TRAIN[1]) in message
    assert f'{labeled!r} line 2' in message
    assert f'{unlabeled!r} line 4' in message


def test_semi_dataset_rejects_overlapping_lists(tmp_path):
    root = make_fake_tree(str(tmp_path))
    _overlapping_split(root)
    cfg = set_data_root(load(voc_config(183)), root)
    try:
        build_dataset(cfg, 'train_dataloader')
    except ValueError as error:
        assert VOC_TRAIN[1] in str(error)
    else:
        raise AssertionError('an overlapping split was accepted')


def test_cityscapes_label_ids_instead_of_train_ids_are_reported(tmp_path):
    root = make_fake_tree(str(tmp_path))
    # raw label ids (7 road, 26 car) where train ids are expected
    bad = [
        osp.join(root, 'cityscapes', 'gtFine', 'train',
                 f'{name}_gtFine_labelTrainIds.png')
        for name in CITY_TRAIN[:NUM_LABELED]
    ]
    for i, path in enumerate(bad):
        _label(path, (128, 64), [7, 26], i)
    cfg = set_data_root(load(cityscapes_config(744)), root)
    dataset = build_dataset(cfg, 'train_dataloader')  # labels read lazily
    with pytest.raises(ValueError) as error:
        dataset[0]
    message = str(error.value)
    assert any(path in message for path in bad)
    assert '26' in message and 'train ids' in message

    # the split checker, on the paths and suffixes of the same config
    labeled = cfg.train_dataloader.dataset.labeled
    with pytest.raises(ValueError) as error:
        check_split(
            osp.join(root, labeled.ann_file),
            data_root=root,
            img_path=labeled.data_prefix.img_path,
            img_suffix='_leftImg8bit.png',
            seg_map_path=labeled.data_prefix.seg_map_path,
            seg_map_suffix='_gtFine_labelTrainIds.png',
            check_trainids=True)
    assert bad[0] in str(error.value)
    assert 'train ids' in str(error.value)


@pytest.mark.usefixtures('one_thread')
@pytest.mark.parametrize('path', [
    cityscapes_config(186),
    cityscapes_config(186, u2pl=False), GTA_U2PL, GTA_SOURCE_ONLY
])
def test_cityscapes_ohem_loss_is_the_mean_over_kept_pixels(path):
    """Both heads of the Cityscapes-style configs: the reference's OHEM.

    2 labeled 512 x 512 crops; on 20 % of the pixels the label's
    probability is below the 0.7 threshold, so OHEM keeps those (more than
    its 2 x 50,000): the loss is their mean cross-entropy, not its 0.2-fold.
    """
    cfg = load(path)
    student = cfg.model.get('segmentor', cfg.model)
    gen = torch.Generator().manual_seed(0)
    size, num_classes = 512, 19
    label = torch.randint(num_classes, (2, size, size), generator=gen)
    hard = torch.rand(2, size, size, generator=gen) < 0.2
    # logit 3 on the label (p ~ 0.53 < 0.7) on hard pixels, 8 elsewhere
    scale = torch.where(hard, 3., 8.)
    logits = torch.zeros(2, num_classes, size, size)
    logits.scatter_(1, label[:, None], scale[:, None])
    logits += 0.1 * torch.randn(logits.shape, generator=gen)
    samples = []
    for i in range(2):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[i:i + 1].clone())
        samples.append(sample)
    ce = torch.nn.functional.cross_entropy(logits, label, reduction='none')
    for name, weight in (('decode_head', 1.), ('auxiliary_head', 0.4)):
        head = MODELS.build(student[name])
        kept = head.sampler.sample(logits, label[:, None])
        assert 0.19 < kept.mean().item() < 0.21
        losses = head.loss_by_feat(logits, samples)
        expected = weight * (ce * kept).sum() / kept.sum()
        assert losses['loss_ce'].item() == pytest.approx(
            expected.item(), rel=1e-4), name
        # mmseg's CrossEntropyLoss would give about a fifth of it
        assert losses['loss_ce'].item() > 4 * weight * (ce * kept).mean()
