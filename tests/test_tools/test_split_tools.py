# Copyright (c) mmseg_u2pl contributors. All rights reserved.
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from make_splits import make_split
from PIL import Image
from split_utils import read_split_list

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MAKE = osp.join(REPO, 'tools', 'dataset_converters', 'make_splits.py')
CONVERT = osp.join(REPO, 'tools', 'dataset_converters',
                   'convert_u2pl_splits.py')
PUBLISHED = '/work/shared/data/u2pl-splits'


def run_tool(script, *args, cwd=REPO):
    """Run a tool as users do, from the repository root."""
    proc = subprocess.run([sys.executable, script, *map(str, args)],
                          cwd=cwd,
                          capture_output=True,
                          text=True,
                          timeout=300)
    return proc


def write_text(path, text):
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)


def test_make_splits_from_list(tmp_path):
    names = [f'train_{i:05d}' for i in range(16)]
    write_text(tmp_path / 'all.txt', '\n'.join(names))  # no final newline
    out = tmp_path / 'out'
    proc = run_tool(MAKE, '--list', tmp_path / 'all.txt', '--fraction', '1/16',
                    '--seed', '4', '--out-dir', out)
    assert proc.returncode == 0, proc.stderr
    assert 'labeled: 1, unlabeled: 15, total: 16 (seed 4, fraction 1/16)' \
        in proc.stdout
    labeled = read_split_list(out / 'labeled.txt')
    unlabeled = read_split_list(out / 'unlabeled.txt')
    # the CLI writes exactly what the library draws
    assert (labeled, unlabeled) == make_split(names, num_labeled=1, seed=4)
    with open(out / 'unlabeled.txt') as f:
        assert f.read().endswith('\n')

    # 0.0625 is the same share as 1/16
    proc = run_tool(MAKE, '--list', tmp_path / 'all.txt', '--fraction',
                    '0.0625', '--seed', '4', '--out-dir', tmp_path / 'out2')
    assert proc.returncode == 0, proc.stderr
    assert read_split_list(tmp_path / 'out2' / 'labeled.txt') == labeled


def write_label(path, array):
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def test_make_splits_from_img_dir_with_labels(tmp_path):
    # Cityscapes-like tree: entries are '<city>/<name>'
    img_dir = tmp_path / 'leftImg8bit' / 'train'
    label_dir = tmp_path / 'gtFine' / 'train'
    entries = [f'aachen/aachen_{i:06d}_000019' for i in range(4)] + \
        [f'bochum/bochum_{i:06d}_000019' for i in range(4)]
    for i, entry in enumerate(entries):
        write_text(img_dir / f'{entry}_leftImg8bit.png', 'x')
        # class 2 only in the last image; class 1 in the even ones
        label = [[0, 1 if i % 2 == 0 else 0, 2 if i == 7 else 255]]
        write_label(label_dir / f'{entry}_gtFine_labelTrainIds.png', label)
    write_text(img_dir / 'aachen' / 'notes.txt', 'not an image')
    proc = run_tool(MAKE, '--img-dir', img_dir, '--img-suffix',
                    '_leftImg8bit.png', '--num-labeled', '2', '--label-dir',
                    label_dir, '--label-suffix', '_gtFine_labelTrainIds.png',
                    '--num-classes', '3', '--require-all-classes', '--out-dir',
                    tmp_path / 'out')
    assert proc.returncode == 0, proc.stderr
    labeled = read_split_list(tmp_path / 'out' / 'labeled.txt')
    unlabeled = read_split_list(tmp_path / 'out' / 'unlabeled.txt')
    assert sorted(labeled + unlabeled) == sorted(entries)
    assert 'bochum/bochum_000003_000019' in labeled  # the only class-2 image
    assert len(labeled) == 2
    # class table: all 8 images hold class 0, 4 class 1, 1 class 2
    rows = {
        line.split()[0]: line.split()
        for line in proc.stdout.splitlines() if line[:1].isdigit()
    }
    assert rows['0'][1:5] == ['2', '100.0', '8', '100.0']
    assert rows['2'][1:5] == ['1', '50.0', '1', '12.5']
    assert rows['1'][3] == '4'


def test_make_splits_errors(tmp_path):
    write_text(tmp_path / 'all.txt', 'a\nb\na\n')
    proc = run_tool(MAKE, '--list', tmp_path / 'all.txt', '--num-labeled', '1',
                    '--out-dir', tmp_path / 'out')
    assert proc.returncode == 1
    assert "'a'" in proc.stderr and 'line 1' in proc.stderr \
        and 'line 3' in proc.stderr
    assert not osp.exists(tmp_path / 'out')
    # argparse-level misuse
    proc = run_tool(MAKE, '--list', tmp_path / 'all.txt', '--num-labeled', '1',
                    '--require-all-classes', '--out-dir', tmp_path / 'out')
    assert proc.returncode == 2
    assert '--require-all-classes needs --label-dir' in proc.stderr


def test_convert_u2pl_splits_tiny_voc_reports_problems(tmp_path):
    src = tmp_path / 'pascal'
    write_text(src / '2' / 'labeled.txt', '2007_000033\n2007_000042')
    write_text(src / '2' / 'unlabeled.txt', '2007_000061\n')
    write_text(src / 'bad' / 'labeled.txt', '2007_000033\nfoo\n')
    write_text(src / 'bad' / 'unlabeled.txt', '2007_000061\n')
    write_text(src / 'val.txt', '2007_000129\n')
    out = tmp_path / 'out'
    proc = run_tool(CONVERT, '--src', src, '--dataset', 'voc', '--out-dir',
                    out)
    # converted, but not a published split: exit status 1 with the table
    assert proc.returncode == 1
    assert read_split_list(out / '2' /
                           'labeled.txt') == ['2007_000033', '2007_000042']
    assert read_split_list(out / 'val.txt') == ['2007_000129']
    lines = proc.stdout.splitlines()
    row = next(line for line in lines if line.startswith('2 '))
    assert 'no published U2PL count' in row
    assert 'expected 10582' in row
    bad = next(line for line in lines if line.startswith('bad '))
    assert 'ERROR' in bad and 'line 2' in bad and "'foo'" in bad
    assert 'val: 1 entries' in proc.stdout


def test_convert_u2pl_splits_data_root_missing_image(tmp_path):
    src = tmp_path / 'cityscapes'
    lab = 'leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png'
    unl = 'leftImg8bit/train/aachen/aachen_000001_000019_leftImg8bit.png'
    write_text(src / '1' / 'labeled.txt', lab + '\n')
    write_text(src / '1' / 'unlabeled.txt', unl + '\n')
    root = tmp_path / 'data'
    write_text(root / lab, 'x')
    write_label(
        root / 'gtFine/train/aachen/aachen_000000_000019'
        '_gtFine_labelTrainIds.png', [[0, 255]])
    proc = run_tool(CONVERT, '--src', src, '--dataset', 'cityscapes',
                    '--out-dir', tmp_path / 'out', '--data-root', root)
    assert proc.returncode == 1
    expected = osp.join(
        str(root), 'leftImg8bit/train', 'aachen',
        'aachen_000001_000019_leftImg8bit.png')
    assert expected in proc.stdout
    assert 'unlabeled.txt' in proc.stdout and 'line 1' in proc.stdout


@pytest.mark.skipif(
    not osp.isdir(PUBLISHED),
    reason=f'published U2PL split lists not found at {PUBLISHED}')
@pytest.mark.parametrize('folder, dataset, counts, total', [
    ('pascal', 'voc', [92, 183, 366, 662, 732, 1323, 1464, 2646, 5291], 10582),
    ('cityscapes', 'cityscapes', [186, 372, 744, 1488], 2975),
])
def test_convert_u2pl_splits_published(tmp_path, folder, dataset, counts,
                                       total):
    out = tmp_path / 'out'
    proc = run_tool(CONVERT, '--src', osp.join(PUBLISHED, folder), '--dataset',
                    dataset, '--out-dir', out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [
        line.split() for line in proc.stdout.splitlines()
        if line[:1].isdigit()
    ]
    assert [int(r[0]) for r in rows] == counts
    for row in rows:
        assert row[-1] == 'ok'
        labeled, unlabeled = (int(v) for v in row[-5:-3])
        assert labeled == int(row[0]) and labeled + unlabeled == total
    assert f'same {total} training images' in proc.stdout
    for count in counts:
        assert len(read_split_list(out / str(count) / 'labeled.txt')) == count
    assert osp.isfile(out / 'val.txt')
