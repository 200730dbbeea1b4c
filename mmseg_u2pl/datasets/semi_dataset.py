# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""The mixed labeled/unlabeled dataset wrapper (paper Sec. 4.1)."""
import copy
import os
import os.path as osp
import warnings
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
from mmengine.dataset import BaseDataset
from mmseg.registry import DATASETS
from mmseg.utils import ConfigType
from torch.utils.data import Dataset

from .sample_checks import check_label_values, naming_sample_files
from .validation import check_dataset_files


@DATASETS.register_module()
class SemiDataset(Dataset):
    """One labeled and one unlabeled sample per item.

    An epoch is one pass over the unlabeled set: item ``i`` pairs unlabeled
    sample ``i`` with labeled sample ``labeled_order[i]`` (repeated seeded
    permutations of the labeled set, :func:`balanced_order`), so every
    labeled sample is used equally often. If the labeled set is the larger
    one (domain adaptation, e.g. GTA5 to Cityscapes) the roles swap. The
    sampler shuffles and shards item indices as usual: each epoch and rank
    sees another labeled sequence, a resumed run the same one.

    The two sides are independent dataset configs (type, data root, split
    file, pipeline; e.g. a labeled source and an unlabeled target domain,
    U2PL+) with the same class list. The unlabeled side needs no label
    files; labels its pipeline loads anyway reach the model for diagnostics
    only (pseudo-label accuracy), never a loss.

    Args:
        labeled (ConfigType): Config of the labeled dataset.
        unlabeled (ConfigType): Config of the unlabeled dataset.
        seed (int): Seed of the labeled re-sampling. Defaults to 0.
        check_files (bool): Check at build time that every listed image (and
            labeled mask) exists and is not an empty or truncated PNG / JPEG
            file. Defaults to True.
        lazy_init (bool): Accepted for mmengine compatibility; the wrapped
            datasets are always fully initialised. Defaults to False.

    Example:
        >>> # batch_size=4: 4 labeled and 4 unlabeled images per GPU
        >>> train_dataloader = dict(batch_size=4, dataset=dict(
        ...     type='SemiDataset',
        ...     labeled=dict(type='PascalVOCDataset', data_root=...,
        ...                  ann_file='splits/366/labeled.txt',
        ...                  pipeline=labeled_pipeline),
        ...     unlabeled=dict(type='PascalVOCDataset', data_root=...,
        ...                    ann_file='splits/366/unlabeled.txt',
        ...                    data_prefix=dict(img_path='JPEGImages'),
        ...                    pipeline=unlabeled_pipeline)))
    """

    def __init__(self,
                 labeled: ConfigType,
                 unlabeled: ConfigType,
                 seed: int = 0,
                 check_files: bool = True,
                 lazy_init: bool = False) -> None:
        self.labeled = self._build('labeled', labeled, check_files)
        self.unlabeled = self._build('unlabeled', unlabeled, check_files)
        self.seed = seed
        self._check_consistency()
        self._check_disjoint()
        num = len(self)
        self.labeled_order = balanced_order(len(self.labeled), num, seed)
        self.unlabeled_order = balanced_order(
            len(self.unlabeled), num, seed + 1)

    @staticmethod
    def _build(side: str, cfg, check_files: bool) -> BaseDataset:
        """Build one side; with ``check_files``, validate it as it loads.

        A ``BaseDataset`` is built lazily so that :func:`check_dataset_files`
        checks the paths before ``full_init`` fails on them without a name.
        """
        if isinstance(cfg, Dataset):
            dataset = cfg
        elif not isinstance(cfg, dict) or 'type' not in cfg:
            raise TypeError(
                f'SemiDataset: `{side}` must be a dataset config dict with a '
                f'`type` key (e.g. dict(type="ToyShapesDataset", ...)), got '
                f'{cfg!r}')
        else:
            cfg = copy.deepcopy(cfg)
            dataset_cls = cfg['type']
            if isinstance(dataset_cls, str):
                dataset_cls = DATASETS.get(dataset_cls)
            if check_files and isinstance(dataset_cls, type) and issubclass(
                    dataset_cls, BaseDataset):
                cfg['lazy_init'] = True
            if check_files:
                _check_cfg_paths(side, cfg)
            with _naming_side(side):
                dataset = DATASETS.build(cfg)
        if check_files:
            with _naming_side(side):
                check_dataset_files(dataset, check_labels=side == 'labeled')
        elif not getattr(dataset, '_fully_initialized', True):
            dataset.full_init()
        return dataset

    def _check_consistency(self) -> None:
        for side in ('labeled', 'unlabeled'):
            if len(getattr(self, side)) == 0:
                raise ValueError(
                    f'SemiDataset: the {side} dataset is empty. Check '
                    f'`train_dataloader.dataset.{side}.ann_file` (split '
                    f'list) and data_root; make a split with '
                    f'tools/dataset_converters/make_splits.py.')
        classes_l = tuple(self.labeled.metainfo.get('classes', ()))
        classes_u = tuple(self.unlabeled.metainfo.get('classes', ()))
        if classes_l != classes_u:
            raise ValueError(
                'SemiDataset: the labeled and unlabeled datasets have '
                f'different class lists:\n  labeled:   {classes_l}\n'
                f'  unlabeled: {classes_u}\nGive both the same classes '
                '(e.g. `metainfo=dict(classes=...)` in '
                '`train_dataloader.dataset.unlabeled`, or map the source '
                'labels to the target classes for domain adaptation).')

    def _check_disjoint(self) -> None:
        """A labeled image must not also be in the unlabeled set."""
        labeled = {
            info['img_path']: i
            for i, info in enumerate(_data_list(self.labeled))
        }
        overlap = [(labeled[info['img_path']], j, info['img_path'])
                   for j, info in enumerate(_data_list(self.unlabeled))
                   if info['img_path'] in labeled]
        if overlap:
            file_l = getattr(self.labeled, 'ann_file', '') or 'labeled list'
            file_u = getattr(self.unlabeled, 'ann_file',
                             '') or 'unlabeled list'
            shown = '\n'.join(
                f'  {path} (line {i + 1} of {file_l}, line {j + 1} of '
                f'{file_u})' for i, j, path in overlap[:5])
            raise ValueError(
                f'SemiDataset: {len(overlap)} image(s) are in both the '
                'labeled and the unlabeled split '
                '(`train_dataloader.dataset.labeled.ann_file` / '
                '`...unlabeled.ann_file`):\n' + shown + '\nA labeled image '
                'must not be pseudo-labeled too: remove it from the '
                'unlabeled list (tools/dataset_converters/make_splits.py '
                'writes disjoint lists).')

    def check_batch_size(self, batch_size: int, world_size: int = 1) -> None:
        """Check that the batch size fits the unlabeled set.

        Called by ``MeanTeacherHook`` before training.

        Args:
            batch_size (int): ``train_dataloader.batch_size``: labeled (and
                unlabeled) images per process and iteration.
            world_size (int): Number of processes. Defaults to 1.

        Raises:
            ValueError: ``batch_size * world_size`` exceeds the number of
                unlabeled images: not one full batch per epoch.

        Warns:
            UserWarning: ``batch_size < 2``: nothing for CutMix to mix, and
                BatchNorm needs more than one sample.
        """
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(
                'SemiDataset: train_dataloader.batch_size must be a positive '
                f'int, got {batch_size!r}.')
        num_u = len(self.unlabeled)
        total = batch_size * world_size
        if total > num_u:
            raise ValueError(
                f'SemiDataset: train_dataloader.batch_size={batch_size} x '
                f'{world_size} process(es) needs {total} unlabeled images per '
                f'iteration, but the unlabeled set has only {num_u}: not one '
                'full batch fits in an epoch. Lower '
                '`train_dataloader.batch_size` (or the number of processes) '
                'or use a larger unlabeled split '
                '(`train_dataloader.dataset.unlabeled.ann_file`).')
        if batch_size < 2:
            warnings.warn(
                f'SemiDataset: train_dataloader.batch_size={batch_size}: '
                'CutMix pairs unlabeled image i with image i+1, so one image '
                'per batch is never mixed, and BatchNorm needs more than one '
                'sample per batch. Use train_dataloader.batch_size >= 2.',
                UserWarning)

    @property
    def metainfo(self) -> dict:
        """Meta information of the labeled side (classes, palette)."""
        return copy.deepcopy(self.labeled.metainfo)

    def __len__(self) -> int:
        return max(len(self.labeled), len(self.unlabeled))

    def __getitem__(self, idx: int) -> dict:
        labeled = self._load('labeled', int(self.labeled_order[idx]))
        unlabeled = self._load('unlabeled', int(self.unlabeled_order[idx]))
        self._check_labels(labeled)
        return dict(labeled=labeled, unlabeled=unlabeled)

    def _load(self, side: str, index: int) -> dict:
        """Sample ``index`` of one side; a failure names its files."""
        dataset = getattr(self, side)
        info = dataset.get_data_info(index) if hasattr(
            dataset, 'get_data_info') else {}
        with naming_sample_files(
                info, f'SemiDataset: {side} sample {index} '
                f'(`train_dataloader.dataset.{side}`)'):
            return dataset[index]

    def _check_labels(self, packed: dict) -> None:
        """Check a labeled sample's labels unless its dataset checks them."""
        sample = packed['data_samples']
        if 'gt_sem_seg' not in sample:
            raise KeyError(
                'SemiDataset: a labeled sample has no `gt_sem_seg`. The '
                'labeled pipeline must contain `LoadAnnotations` before '
                '`PackSegInputs`.')
        if not getattr(self.labeled, 'checks_label_values', False):
            check_label_values(sample.gt_sem_seg.data,
                               len(self.labeled.metainfo['classes']),
                               getattr(self.labeled, 'ignore_index', 255),
                               sample.metainfo.get('seg_map_path', '?'))

    def get_subset_(self, indices: Sequence[int]) -> None:  # pragma: no cover
        raise NotImplementedError(
            'SemiDataset does not support `indices`; subset the split lists '
            'instead.')

    def full_init(self) -> None:
        """Both sides are initialised at construction (mmengine API)."""


@contextmanager
def _naming_side(side: str) -> Iterator[None]:
    """Prefix errors with the failing side's config key (same type)."""
    try:
        yield
    except (FileNotFoundError, ValueError) as error:
        message = (f'SemiDataset: the {side} dataset '
                   f'(`train_dataloader.dataset.{side}`) failed: {error}')
        try:
            renamed = type(error)(message)
        except Exception:  # an exception type with other arguments
            raise error
        raise renamed from error


def balanced_order(num_samples: int, length: int, seed: int) -> np.ndarray:
    """``length`` indices into ``num_samples`` samples, used equally often.

    Concatenated seeded permutations, cut to ``length``: every sample appears
    ``length // num_samples`` or one more times. With ``length ==
    num_samples`` it is the identity (the sampler shuffles anyway).
    """
    if length == num_samples:
        return np.arange(num_samples)
    rng = np.random.default_rng(seed)
    repeats = -(-length // num_samples)
    order = np.concatenate(
        [rng.permutation(num_samples) for _ in range(repeats)])
    return order[:length]


def _data_list(dataset) -> list:
    """The data infos of a dataset (``data_list`` may be serialized away)."""
    return [dataset.get_data_info(i) for i in range(len(dataset))]


def _check_cfg_paths(side: str, cfg: dict) -> None:
    """Check ``data_root`` and ``ann_file`` before the dataset is built
    (``PascalVOCDataset`` asserts on a missing split file, with no message).
    """
    key = f'train_dataloader.dataset.{side}'
    data_root = cfg.get('data_root') or ''
    if data_root and not osp.isdir(data_root):
        raise FileNotFoundError(
            f'SemiDataset: `{key}.data_root` = {data_root!r} is not a '
            f'directory (working directory: {os.getcwd()}). Prepare the data '
            '(see docs/data_preparation.md) or fix the path.')
    ann_file = cfg.get('ann_file') or ''
    if ann_file:
        path = osp.join(data_root, ann_file)  # ann_file if absolute
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'SemiDataset: the split file `{key}.ann_file` = {path!r} '
                'does not exist. Write it with '
                'tools/dataset_converters/make_splits.py or '
                'tools/dataset_converters/convert_u2pl_splits.py, or fix the '
                'path.')
