# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Bad-input sweep: each broken input fails early with a clear message.

One table. Every case breaks a fresh copy of the tiny toy dataset (or the
tiny U2PL config) in one way and runs the real entry point: an in-process
mmengine ``Runner`` built from the config as ``tools/train.py`` builds it
(``Runner.from_cfg`` + ``runner.train()``), or ``tools/train.py`` itself as
a subprocess for the checks that live there (the model against the data and
the checkpoint) to show the user-facing message and that the failed run
leaves the files already in its work dir alone. The expected message names
the file, config key or value at fault.
"""
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
from typing import Callable, Dict, NamedTuple, Pattern

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image
from toy_fixtures import one_thread, toy_data_root  # noqa: F401  (fixtures)
from toy_fixtures import (REPO_ROOT, U2PL_NOCONTRAST_CONFIG, as_cli_options,
                          build_model, toy_runner_cfg, toy_split,
                          toy_train_cfg_options)

from mmseg_u2pl.utils.checkpoint_fit import CheckpointMismatchError

TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
LABELED, UNLABELED = 'labeled_1-16', 'unlabeled_1-16'
# A file an earlier run left in the work dir: a failed run must keep it.
EARLIER_CHECKPOINT = b'weights of an earlier run'


# ---------------------------------------------------------------------------
# how each case breaks the data (``root``) or the config (``options``)
# ---------------------------------------------------------------------------
def split_path(root: str, name: str) -> str:
    return osp.join(root, 'splits', name + '.txt')


def write_split(root: str, name: str, names: list) -> None:
    with open(split_path(root, name), 'w') as f:
        f.write(''.join(n + '\n' for n in names))


def break_data_root(root, options, tmp):
    options['train_dataloader.dataset.labeled.data_root'] = osp.join(
        root, 'no_such_dir')


def break_missing_image(root, options, tmp):
    write_split(root, LABELED, toy_split(root, LABELED) + ['train_99999'])


def break_corrupt_image(root, options, tmp):
    name = toy_split(root, UNLABELED)[2]
    with open(osp.join(root, 'images', name + '.png'), 'wb') as f:
        f.write(b'<html>404 Not Found</html>')


def break_truncated_label(root, options, tmp):
    path = osp.join(root, 'labels', toy_split(root, LABELED)[1] + '.png')
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])


def break_label_values(root, options, tmp):
    """Every labeled map is class 9 of 6, so any crop holds it."""
    for name in toy_split(root, LABELED):
        Image.fromarray(np.full(
            (32, 32), 9,
            np.uint8)).save(osp.join(root, 'labels', name + '.png'))


def break_empty_split(root, options, tmp):
    write_split(root, UNLABELED, [])


def break_overlap(root, options, tmp):
    labeled = toy_split(root, LABELED)
    write_split(root, UNLABELED, toy_split(root, UNLABELED) + labeled[:1])


def break_class_lists(root, options, tmp):
    options['train_dataloader.dataset.unlabeled.metainfo'] = dict(
        classes=('background', 'disk'))


def break_semi_train_cfg_key(root, options, tmp):
    options['model.semi_train_cfg.unsup_wieght'] = 0.5


def break_num_classes(root, options, tmp):
    options['model.segmentor.decode_head.num_classes'] = 5


def break_checkpoint(root, options, tmp):
    """A plain mmseg checkpoint of the same network with a ResNet-34."""
    segmentor = Config.fromfile(U2PL_NOCONTRAST_CONFIG).model.segmentor
    segmentor.backbone.depth = 34
    segmentor.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    segmentor.decode_head.norm_cfg = dict(type='BN', requires_grad=True)
    path = osp.join(tmp, 'r34_toy.pth')
    torch.save(dict(state_dict=build_model(segmentor).state_dict()), path)
    options['load_from'] = path


class Case(NamedTuple):
    """A broken input, its entry point and the error it must raise."""
    breaks: Callable
    entry: str  # 'runner' (in process) or 'train.py' (subprocess)
    error: type
    message: str  # regex; {root} / {tmp} are replaced (escaped)


SPLIT = r'{root}/splits/'
CASES = {
    'missing data root':
    Case(
        break_data_root, 'runner', FileNotFoundError,
        r'`train_dataloader\.dataset\.labeled\.data_root` = '
        r"'{root}/no_such_dir' is not a directory"),
    'split file names a missing image':
    Case(
        break_missing_image, 'runner', FileNotFoundError,
        r'(?s)1 of 5 image files listed in split file .* do not exist:\n'
        rf'  {{root}}/images/train_99999\.png \(line 5 of {SPLIT}'
        r'labeled_1-16\.txt\)'),
    'corrupt image':
    Case(
        break_corrupt_image, 'runner', ValueError,
        r'(?s)`train_dataloader\.dataset\.unlabeled`.*1 of 60 image files .* '
        r'are damaged:\n  {root}/images/train_\d+\.png \(line 3 of '
        rf"{SPLIT}unlabeled_1-16\.txt\): is not a PNG image: it starts with "
        r"b'<html>40'"),
    'truncated label file':
    Case(
        break_truncated_label, 'runner', ValueError,
        r'(?s)1 of 4 label files .* are damaged:\n  {root}/labels/'
        rf'train_\d+\.png \(line 2 of {SPLIT}labeled_1-16\.txt\): is '
        r'truncated: this PNG file of \d+ bytes lacks its final IEND chunk'),
    'label values out of range':
    Case(
        break_label_values, 'runner', ValueError,
        r"Label map '{root}/labels/train_\d+\.png' holds value\(s\) \[9\] "
        r'\(\d+ pixels\) outside the allowed \[0, 6\) ∪ \{{255\}}'),
    'empty split':
    Case(
        break_empty_split, 'runner', ValueError,
        r'`train_dataloader\.dataset\.unlabeled`.* is empty: split file '
        rf"'{SPLIT}unlabeled_1-16\.txt' lists no samples"),
    'labeled and unlabeled overlap':
    Case(
        break_overlap, 'runner', ValueError,
        r'1 image\(s\) are in both the labeled and the unlabeled split.*\n'
        r'  {root}/images/train_\d+\.png \(line 1 of '
        rf'{SPLIT}labeled_1-16\.txt, line 61 of {SPLIT}unlabeled_1-16\.txt'),
    'class lists differ':
    Case(break_class_lists, 'runner', ValueError,
         r"(?s)different class lists:.*unlabeled: \('background', 'disk'\)"),
    'misspelled semi_train_cfg key':
    Case(break_semi_train_cfg_key, 'runner', KeyError,
         r"Unknown key\(s\) \['unsup_wieght'\] in model\.semi_train_cfg"),
    'num_classes disagrees with the dataset':
    Case(
        break_num_classes, 'train.py', ValueError,
        r'model\.segmentor\.decode_head\.num_classes = 5, but the dataset '
        r"\(train_dataloader\.dataset\) has 6 classes: \('background', "),
    # ResNet-34 has 8 BasicBlocks more than ResNet-18 (1 + 2 + 4 + 1) of 12
    # tensors each (2 convs, 2 BNs of 5), in the student and the teacher
    'checkpoint of another architecture':
    Case(
        break_checkpoint, 'train.py', CheckpointMismatchError,
        r"(?s)Checkpoint '{tmp}/r34_toy\.pth' does not fit the model "
        r'\(U2PL\).*\n  192 weight\(s\) of the file have no place in the '
        r'model: student\.backbone\.layer1\.2\.conv1\.weight, .*'
        r'--cfg-options allow_checkpoint_mismatch=True'),
}


def expected(case: Case, root: str, tmp: str) -> Pattern:
    return re.compile(
        case.message.format(root=re.escape(root), tmp=re.escape(tmp)))


# ---------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------
def train_in_process(options: Dict[str, object], work_dir: str) -> None:
    """Build the Runner from the config and train, as tools/train.py does."""
    cfg = toy_runner_cfg(U2PL_NOCONTRAST_CONFIG, work_dir, options)
    cfg.experiment_name = osp.basename(work_dir)
    Runner.from_cfg(cfg).train()


def train_subprocess(options: Dict[str, object],
                     work_dir: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    env.pop('PYTHONPATH', None)  # the tool must find the repository alone
    return subprocess.run(
        [
            sys.executable, TRAIN, U2PL_NOCONTRAST_CONFIG, '--work-dir',
            work_dir, '--cfg-options'
        ] + as_cli_options(options),
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300)


def error_name(error: type) -> str:
    """How a traceback's last line names the exception type."""
    if error.__module__ == 'builtins':
        return error.__qualname__
    return f'{error.__module__}.{error.__qualname__}'


@pytest.mark.parametrize('name', list(CASES))
def test_bad_input_fails_early_and_clearly(
        name,
        toy_data_root,  # noqa: F811
        tmp_path,
        one_thread):  # noqa: F811
    case = CASES[name]
    root = str(tmp_path / 'toy')
    shutil.copytree(toy_data_root, root)
    # a work dir name of its own: the visualizer is a per-name singleton
    work_dir = str(tmp_path / re.sub(r'\W', '_', name))
    options = toy_train_cfg_options(root)
    case.breaks(root, options, str(tmp_path))
    pattern = expected(case, root, str(tmp_path))

    if case.entry == 'runner':
        with pytest.raises(case.error) as info:
            train_in_process(options, work_dir)
        assert pattern.search(str(info.value)), str(info.value)
        return

    os.makedirs(work_dir)
    earlier = osp.join(work_dir, 'iter_2.pth')
    with open(earlier, 'wb') as f:
        f.write(EARLIER_CHECKPOINT)
    proc = train_subprocess(options, work_dir)
    out = proc.stdout
    assert proc.returncode != 0, out[-3000:]
    # the traceback ends with the expected type and message
    last = out[out.rindex('Traceback (most recent call last)'):]
    assert re.search(rf'^{re.escape(error_name(case.error))}: ', last,
                     re.MULTILINE), last[-3000:]
    assert pattern.search(last), last[-3000:]
    assert 'Iter(train)' not in out  # failed before the first iteration
    with open(earlier, 'rb') as f:
        assert f.read() == EARLIER_CHECKPOINT
    files = os.listdir(work_dir)
    assert [f for f in files if f.endswith('.pth')] == ['iter_2.pth']
    assert 'last_checkpoint' not in files
