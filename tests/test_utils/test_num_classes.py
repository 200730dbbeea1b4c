# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""The model's classes against the dataset's."""
import pytest
from toy_fixtures import build_model, tiny_segmentor_cfg, tiny_u2pl_cfg

from mmseg_u2pl.utils.num_classes import check_num_classes


def test_check_num_classes_names_the_config_key():
    classes = ('background', 'disk', 'square', 'triangle', 'ring', 'cross')
    plain = build_model(tiny_segmentor_cfg(num_classes=6))
    check_num_classes(plain, classes, 'train_dataloader.dataset')
    check_num_classes(plain, (), 'train_dataloader.dataset')  # no classes
    with pytest.raises(ValueError) as info:
        check_num_classes(plain, classes[:4], 'test_dataloader.dataset')
    assert str(info.value).startswith(
        'model.decode_head.num_classes = 6, but the dataset '
        "(test_dataloader.dataset) has 4 classes: ('background', 'disk', "
        "'square', 'triangle'). Set `model.decode_head.num_classes=4`")
    u2pl = build_model(tiny_u2pl_cfg(num_classes=5))
    with pytest.raises(
            ValueError,
            match=r'^model\.segmentor\.decode_head\.num_classes = 5, but .* '
            r'has 6 classes.*--cfg-options '
            r'model\.segmentor\.decode_head\.num_classes=6'):
        check_num_classes(u2pl, classes, 'train_dataloader.dataset')
