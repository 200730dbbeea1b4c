# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""The embedded datasets ``ToyShapesDataset`` and ``ToyShapes21Dataset``.

Their files are written by ``tools/dataset_converters/make_toy_dataset.py``,
whose generators take the class names and palettes defined here.
"""
from typing import Any, Optional

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS
from .sample_checks import check_label_values, naming_sample_files
from .validation import check_dataset_files, check_dataset_paths

#: ToyShapes: the object classes are named after their outlines.
TOY_CLASSES = ('background', 'disk', 'square', 'triangle', 'ring', 'cross')
TOY_PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25],
               [0, 130, 200], [245, 130, 48]]

#: ToyShapes21: ten pairs of confusable classes, named after their cues
#: (tone, hue, texture where the pair differs in it, outline).
TOY21_CLASSES = (
    'background',
    'light-red-disk', 'dark-red-cross',
    'light-orange-plain-square', 'dark-orange-striped-square',
    'light-yellow-triangle', 'dark-yellow-ring',
    'light-lime-plain-disk', 'dark-lime-checked-disk',
    'light-green-square', 'dark-green-star',
    'light-teal-plain-triangle', 'dark-teal-dotted-triangle',
    'light-azure-disk', 'dark-azure-bar',
    'light-blue-plain-square', 'dark-blue-checked-square',
    'light-purple-triangle', 'dark-purple-crescent',
    'light-magenta-plain-disk', 'dark-magenta-striped-disk')
#: Each pair in the colour of its hue, the dark member darker
#: (visualisation only).
TOY21_PALETTE = [
    [0, 0, 0],
    [255, 38, 38], [153, 23, 23],
    [255, 142, 38], [153, 85, 23],
    [255, 246, 38], [153, 148, 23],
    [134, 255, 38], [80, 153, 23],
    [38, 255, 73], [23, 153, 44],
    [38, 255, 203], [23, 153, 122],
    [38, 177, 255], [23, 106, 153],
    [38, 47, 255], [23, 28, 153],
    [160, 38, 255], [96, 23, 153],
    [255, 38, 194], [153, 23, 117]
]


@DATASETS.register_module()
class ToyShapesDataset(BaseSegDataset):
    """Textured shapes on a cluttered background (colour hints, shape decides).

    Classes: ``background, disk, square, triangle, ring, cross``. Generate the
    files once with ``python tools/dataset_converters/make_toy_dataset.py
    --out data/toy``;
    the layout is ``images/<name>.png``, ``labels/<name>.png`` and split lists
    ``splits/{train,val,labeled_1-16,unlabeled_1-16,...}.txt``.

    Inputs are validated: a missing ``data_root``, split file, image or label,
    or an empty or truncated PNG, raises at construction (naming the path and
    the split file line); a sample that fails to load names its files, and
    the label values of every returned sample are checked against
    ``[0, num_classes) ∪ {ignore_index}``.

    Config example (labeled, unlabeled and validation sets)::

        dataset_type = 'ToyShapesDataset'
        data_root = 'data/toy'
        train_pipeline = [
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PackSegInputs'),
        ]
        labeled_set = dict(
            type=dataset_type,
            data_root=data_root,
            ann_file='splits/labeled_1-16.txt',
            pipeline=train_pipeline)
        # unlabeled: images only, no label files are read
        unlabeled_set = dict(
            type=dataset_type,
            data_root=data_root,
            ann_file='splits/unlabeled_1-16.txt',
            data_prefix=dict(img_path='images'),
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='RandomFlip', prob=0.5),
                dict(type='PackSegInputs'),
            ])
        val_dataloader = dict(
            batch_size=1,
            dataset=dict(
                type=dataset_type,
                data_root=data_root,
                ann_file='splits/val.txt',
                pipeline=[
                    dict(type='LoadImageFromFile'),
                    dict(type='LoadAnnotations'),
                    dict(type='PackSegInputs'),
                ]))

    Args:
        ann_file (str): Split list, one name per line, relative to
            ``data_root``, e.g. ``'splits/labeled_1-16.txt'``.
        img_suffix (str): Image suffix. Defaults to ``'.png'``.
        seg_map_suffix (str): Label suffix. Defaults to ``'.png'``.
        reduce_zero_label (bool): Defaults to False (0 is background).
        data_prefix (dict, optional): Folders of images and labels. Defaults
            to ``dict(img_path='images', seg_map_path='labels')``; pass
            ``dict(img_path='images')`` for an unlabeled set.
        lazy_init (bool): Defer loading (and validating) the data list.
            Defaults to False.
        **kwargs: Other arguments of :class:`mmseg.datasets.BaseSegDataset`.
    """
    METAINFO = dict(classes=TOY_CLASSES, palette=TOY_PALETTE)
    #: :meth:`prepare_data` checks the label values of every sample, so a
    #: wrapper (:class:`~mmseg_u2pl.datasets.SemiDataset`) need not.
    checks_label_values = True

    def __init__(self,
                 ann_file: str = '',
                 img_suffix: str = '.png',
                 seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = False,
                 data_prefix: Optional[dict] = None,
                 lazy_init: bool = False,
                 **kwargs) -> None:
        if data_prefix is None:
            data_prefix = dict(img_path='images', seg_map_path='labels')
        # Construct lazily so that our full_init (with its checks) runs
        # instead of mmseg's bare assertion on a missing split file.
        super().__init__(
            ann_file=ann_file,
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=reduce_zero_label,
            data_prefix=data_prefix,
            lazy_init=True,
            **kwargs)
        if not lazy_init:
            self.full_init()

    def _fix_hint(self) -> str:
        root = str(self.data_root
                   or 'data/toy').replace('{', '{{').replace('}', '}}')
        return ('generate the toy dataset with `python '
                f'tools/dataset_converters/make_toy_dataset.py --out {root}` '
                'from the repository root, or fix data_root / ann_file in '
                'your config (relative paths are resolved from the current '
                'directory {cwd})')

    def full_init(self) -> None:
        """Load the data list, checking every path it needs and lists."""
        if self._fully_initialized:
            return
        check_dataset_paths(self, fix_hint=self._fix_hint())
        super().full_init()
        check_dataset_files(self, check_labels=True, fix_hint=self._fix_hint())

    def prepare_data(self, idx: int) -> Any:
        """Run the pipeline on sample ``idx`` and check its label values."""
        with naming_sample_files(
                self.get_data_info(idx),
                f'{type(self).__name__} sample {idx}'):
            data = super().prepare_data(idx)
        if isinstance(data, dict):
            self._check_sample_labels(data, idx)
        return data

    def _check_sample_labels(self, data: dict, idx: int) -> None:
        num_classes = len(self.metainfo['classes'])
        samples = data.get('data_samples')
        if samples is None:
            if 'gt_seg_map' in data:  # a pipeline without PackSegInputs
                check_label_values(data['gt_seg_map'], num_classes,
                                   self.ignore_index,
                                   data.get('seg_map_path') or f'sample {idx}')
            return
        if not isinstance(samples, (list, tuple)):
            samples = [samples]
        for sample in samples:
            if 'gt_sem_seg' in sample:
                filename = sample.metainfo.get('seg_map_path', f'sample {idx}')
                check_label_values(sample.gt_sem_seg.data, num_classes,
                                   self.ignore_index, filename)


@DATASETS.register_module()
class ToyShapes21Dataset(ToyShapesDataset):
    """ToyShapes21: 20 object classes in ten pairs of confusable classes,
    with a long-tailed frequency.

    Same layout, validation and arguments as :class:`ToyShapesDataset`.
    Generate the files once with ``python
    tools/dataset_converters/make_toy_dataset.py --dataset toy21 --out
    data/toy21``; the classes and their cues are
    described in ``docs/benchmarks.md`` (ToyShapes21).

    Config example::

        train_dataloader = dict(
            dataset=dict(
                type='ToyShapes21Dataset',
                data_root='data/toy21',
                ann_file='splits/labeled_1-16.txt',
                pipeline=train_pipeline))
    """
    METAINFO = dict(classes=TOY21_CLASSES, palette=TOY21_PALETTE)

    def _fix_hint(self) -> str:
        root = str(self.data_root
                   or 'data/toy21').replace('{', '{{').replace('}', '}}')
        return ('generate the dataset with `python '
                'tools/dataset_converters/make_toy_dataset.py --dataset toy21 '
                f'--out {root}` from the repository root, or fix data_root / '
                'ann_file in your config (relative paths are resolved from '
                'the current directory {cwd})')
