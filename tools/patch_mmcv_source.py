# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Make mmcv 2.1.0's source build against torch >= 2.14.

torch 2.14's headers require C++20; mmcv 2.1.0's ``setup.py`` compiles its
CPU ops with ``-std=c++17``. This changes that one line (an error names the
file when the line is not there exactly once, so a changed mmcv source is
noticed, not silently mis-built). Used by ``tools/setup_env.sh`` and by the
GPU check's mmcv build.

Usage: ``python tools/patch_mmcv_source.py SRC/setup.py``
"""
import sys

OLD = "extra_compile_args['cxx'] = ['-std=c++17']"
NEW = "extra_compile_args['cxx'] = ['-std=c++20']"


def patch_setup(path: str) -> None:
    """Switch the C++ standard of mmcv's ``setup.py`` at ``path`` to
    C++20 (nothing to do when it is already)."""
    with open(path) as f:
        text = f.read()
    if OLD not in text and text.count(NEW) == 1:
        return
    if text.count(OLD) != 1:
        raise ValueError(
            f'{path}: expected the line `{OLD}` exactly once (found '
            f'{text.count(OLD)}); this is not the mmcv 2.1.0 source this '
            'patch is for: update tools/patch_mmcv_source.py.')
    with open(path, 'w') as f:
        f.write(text.replace(OLD, NEW))


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    try:
        patch_setup(sys.argv[1])
    except (OSError, ValueError) as error:
        sys.exit(f'[patch_mmcv_source] ERROR: {error}')
