# Copyright (c) mmseg_u2pl contributors. All rights reserved.
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The repository (for ``mmseg_u2pl``) and the dataset tools' helper modules
# (``split_utils``, ``toy_shapes``, ...), which are scripts, not a package.
for path in (ROOT, os.path.join(ROOT, 'tools', 'dataset_converters')):
    if path not in sys.path:
        sys.path.insert(0, path)

import pytest  # noqa: E402
from mmengine.logging import MessageHub  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_message_hub(request):
    """Each test starts with a MessageHub of its own (no runtime info left
    over from an earlier test: iteration, warm-up length)."""
    MessageHub.get_instance(f'pytest:{request.node.nodeid}')
    yield
