# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""One mmseg ``SegDataPreProcessor`` applied to each branch of a batch."""
from typing import Any, Dict

from mmengine.model import BaseDataPreprocessor
from mmseg.registry import MODELS

BRANCHES = ('labeled', 'unlabeled')


@MODELS.register_module()
class SemiSegDataPreProcessor(BaseDataPreprocessor):
    """Normalise and pad the labeled and unlabeled branches of a batch.

    Training batches from :class:`SemiDataset` are
    ``{'labeled': {'inputs': [...], 'data_samples': [...]}, 'unlabeled':
    {...}}``; each branch goes through the same mmseg ``SegDataPreProcessor``
    and the result is ``{'inputs': {'labeled': T, 'unlabeled': T},
    'data_samples': {'labeled': [...], 'unlabeled': [...]}}``. Any other batch
    (validation, test, a supervised batch) is passed to the wrapped
    preprocessor unchanged, so it behaves exactly like it.

    All keyword arguments are those of ``SegDataPreProcessor``.

    Example:
        >>> data_preprocessor = dict(
        ...     type='SemiSegDataPreProcessor',
        ...     mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
        ...     bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
        ...     size=(513, 513))
    """

    def __init__(self, **kwargs) -> None:
        super().__init__()
        kwargs.pop('type', None)
        if kwargs.get('batch_augments'):
            raise ValueError(
                'SemiSegDataPreProcessor: `batch_augments` is not supported; '
                'strong augmentation (CutMix) is done by the segmentor on '
                'the unlabeled batch (`semi_train_cfg.cutmix`).')
        self.seg_preprocessor = MODELS.build(
            dict(type='SegDataPreProcessor', **kwargs))

    def forward(self, data: Dict[str, Any], training: bool = False) -> dict:
        if isinstance(data, dict) and set(data) == set(BRANCHES):
            inputs, data_samples = {}, {}
            for branch in BRANCHES:
                out = self.seg_preprocessor(data[branch], training)
                inputs[branch] = out['inputs']
                data_samples[branch] = out['data_samples']
            return dict(inputs=inputs, data_samples=data_samples)
        return self.seg_preprocessor(data, training)
