# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""U2PL / U2PL+ semi-supervised semantic segmentation for MMSegmentation.

Importing this package registers its datasets, models, hooks and loops into
MMSegmentation's registries, so configs only need
``custom_imports = dict(imports=['mmseg_u2pl'])``. It also allow-lists the
objects of mmengine checkpoints for torch's safe (``weights_only``) loading.
"""
from .version import __version__, version_info
from .utils import register_checkpoint_safe_globals
from . import datasets, engine, models  # noqa: F401,E402

register_checkpoint_safe_globals()

__all__ = ['__version__', 'version_info']
