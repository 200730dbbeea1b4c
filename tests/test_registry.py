# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Importing mmseg_u2pl registers every public module in mmseg's registries."""
import pytest
from mmseg.registry import (DATASETS, HOOKS, LOOPS, MODELS, OPTIM_WRAPPERS,
                            RUNNERS)

import mmseg_u2pl

EXPECTED = [
    (MODELS, 'U2PL'),
    (MODELS, 'MeanTeacherSegmentor'),
    (MODELS, 'SemiSegDataPreProcessor'),
    (MODELS, 'UnreliableContrastiveLoss'),
    (MODELS, 'RepresentationHead'),
    (MODELS, 'DeepLabV3PlusHead'),
    (DATASETS, 'SemiDataset'),
    (DATASETS, 'ToyShapesDataset'),
    (HOOKS, 'MeanTeacherHook'),
    (HOOKS, 'PseudoLabelVisualizationHook'),
    (HOOKS, 'RandomStateHook'),
    (HOOKS, 'AtomicCheckpointHook'),
    (RUNNERS, 'ExactResumeRunner'),
    (LOOPS, 'TeacherStudentValLoop'),
    (OPTIM_WRAPPERS, 'CPUAmpOptimWrapper'),
]


@pytest.mark.parametrize(
    'registry,name', EXPECTED, ids=[name for _, name in EXPECTED])
def test_registered_in_mmseg_registries(registry, name):
    cls = registry.get(name)
    assert cls is not None, f'{name} is not registered in {registry.name}'
    assert cls.__module__.startswith('mmseg_u2pl.'), cls.__module__


def test_version():
    assert isinstance(mmseg_u2pl.__version__, str)
    assert mmseg_u2pl.version_info[:2] == tuple(
        int(x) for x in mmseg_u2pl.__version__.split('.')[:2])


def test_configs_import_the_package_by_custom_imports():
    from mmengine.config import Config
    cfg = Config.fromfile('configs/_base_/default_runtime.py')
    assert cfg.custom_imports['imports'] == ['mmseg_u2pl']
