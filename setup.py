# Copyright (c) mmseg_u2pl contributors. All rights reserved.
import os.path as osp

from setuptools import find_packages, setup


def get_version() -> str:
    scope = {}
    with open(osp.join(osp.dirname(__file__), 'mmseg_u2pl', 'version.py')) as f:
        exec(compile(f.read(), 'version.py', 'exec'), scope)
    return scope['__version__']


def parse_requirements(fname: str = 'requirements/runtime.txt') -> list:
    """Read requirement lines, skipping comments and blank lines."""
    path = osp.join(osp.dirname(__file__), fname)
    with open(path) as f:
        lines = [line.split('#')[0].strip() for line in f]
    return [line for line in lines if line and not line.startswith('-')]


setup(
    name='mmseg_u2pl',
    version=get_version(),
    description='U2PL/U2PL+ semi-supervised semantic segmentation for '
    'MMSegmentation',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    license='Apache License 2.0',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'docs')),
    include_package_data=True,
    python_requires='>=3.8',
    install_requires=parse_requirements(),
    extras_require=dict(tests=parse_requirements('requirements/tests.txt')),
    zip_safe=False,
)
