# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""keep_freed_cpu_memory: large temporaries stop page-faulting in anew."""
import subprocess
import sys

import pytest

# Counts the minor page faults of each of 12 rounds of allocating (and
# filling) a 64 MiB tensor and freeing it. With glibc's defaults every round
# faults its 16k 4-KiB pages in anew (blocks above 32 MiB are fresh mmaps);
# with freed memory kept, the first rounds grow the heap and most later
# rounds reuse it (an occasional round still grows it).
PROBE = '''
import resource, sys, torch
if sys.argv[1] == 'keep':
    from mmseg_u2pl.utils import keep_freed_cpu_memory
    assert keep_freed_cpu_memory()
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    big, small = torch.ones(16 * 2**20), torch.ones(2**20)
    del big
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
'''


def _page_faults(mode: str) -> list:
    out = subprocess.run([sys.executable, '-c', PROBE, mode],
                         check=True,
                         capture_output=True,
                         text=True)
    return [int(value) for value in out.stdout.split()]


@pytest.mark.skipif(
    not sys.platform.startswith('linux'), reason='glibc mallopt')
def test_keep_freed_cpu_memory_avoids_page_faults():
    default, kept = _page_faults('default'), _page_faults('keep')
    assert min(default) > 8000, default  # 64 MiB / 4 KiB = 16384 a round
    reused = [faults < 1000 for faults in kept[4:]]
    assert sum(reused) >= 6, kept


def test_prepare_launch_applies_it_on_cpu_only_unless_disabled(monkeypatch):
    from mmengine.config import Config

    import mmseg_u2pl.utils.launch as launch
    calls = []
    monkeypatch.setattr(launch, 'keep_freed_cpu_memory',
                        lambda: calls.append(1))
    monkeypatch.setattr(launch.torch.cuda, 'is_available', lambda: False)
    launch.prepare_launch(Config(dict(model=dict())), 'none')
    assert calls == [1]
    launch.prepare_launch(
        Config(dict(model=dict(), env_cfg=dict(keep_freed_cpu_memory=False))),
        'none')
    assert calls == [1]
    monkeypatch.setattr(launch.torch.cuda, 'is_available', lambda: True)
    launch.prepare_launch(Config(dict(model=dict())), 'none')
    assert calls == [1]
