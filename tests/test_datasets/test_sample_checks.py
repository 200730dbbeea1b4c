# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Checks of a sample as it loads: label values and the failing files."""
import numpy as np
import pytest
import torch

from mmseg_u2pl.datasets.sample_checks import (check_label_values,
                                               naming_sample_files)


@pytest.mark.parametrize('to_tensor', [False, True])
def test_check_label_values(to_tensor):

    def convert(array):
        return torch.from_numpy(array) if to_tensor else array

    good = np.array([[0, 5, 255], [3, 1, 2]], dtype=np.uint8)
    check_label_values(convert(good), 6, 255, 'ok.png')
    bad = np.array([[0, 6, 255], [9, 9, 2]], dtype=np.int64)
    with pytest.raises(ValueError) as info:
        check_label_values(convert(bad), 6, 255, 'labels/x.png')
    message = str(info.value)
    assert "'labels/x.png'" in message
    assert '[6, 9] (3 pixels)' in message
    assert '[0, 6) ∪ {255}' in message
    assert 'reduce_zero_label' in message
    negative = np.array([-1, 0, 1], dtype=np.int64)
    with pytest.raises(ValueError, match=r'\[-1\]'):
        check_label_values(convert(negative), 6, 255, 'n.png')
    # with ignore_index=-1 the same map is fine
    check_label_values(convert(negative), 6, -1, 'n.png')
    fractional = np.array([0., 1.5, 2.], dtype=np.float32)
    with pytest.raises(ValueError, match=r'\[1.5\]'):
        check_label_values(convert(fractional), 6, 255, 'f.png')


def test_check_label_values_bad_arguments():
    with pytest.raises(ValueError, match='num_classes'):
        check_label_values(np.zeros(3), 0, 255, 'x.png')


def test_naming_sample_files_adds_the_files_once():
    info = dict(img_path='data/images/a.png', seg_map_path='data/labels/a.png')
    with pytest.raises(OSError) as error:
        with naming_sample_files(info, 'MyDataset sample 7'):
            raise OSError('cannot identify image file <_io.BytesIO>')
    message = str(error.value)
    assert message.startswith(
        "MyDataset sample 7 (img_path='data/images/a.png', "
        "seg_map_path='data/labels/a.png') failed to load: OSError: cannot "
        'identify image file <_io.BytesIO>. If a file cannot be decoded')
    assert isinstance(error.value.__cause__, OSError)
    # an error that names a file already, and an error raised by an inner
    # guard, are passed on unchanged
    original = ValueError("Label map 'data/labels/a.png' holds value(s) [9]")
    for inner in (original, error.value):
        with pytest.raises(type(inner)) as again:
            with naming_sample_files(info, 'Outer sample 0'):
                raise inner
        assert again.value is inner
    # without file names there is nothing to add
    with pytest.raises(KeyError) as bare:
        with naming_sample_files({}, 'x'):
            raise KeyError('k')
    assert str(bare.value) == "'k'"
