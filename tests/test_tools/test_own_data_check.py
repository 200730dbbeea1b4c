# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""The own-data check: its datasets, the configs it derives from the
own-dataset template, its table, and a real (shortened) run of both arms."""
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image
from toy_fixtures import REPO_ROOT

import folder_datasets as fd

SCRIPT = osp.join(REPO_ROOT, 'tools', 'analysis', 'own_data_check.py')
_spec = importlib.util.spec_from_file_location('own_data_check', SCRIPT)
odc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(odc)


@pytest.fixture
def small_datasets(monkeypatch):
    """The two datasets with few images (the drawing is unchanged)."""
    for kind in ('regions', 'objects'):
        monkeypatch.setitem(fd.DATASETS, kind,
                            fd.DATASETS[kind]._replace(
                                num_train=48, num_val=8))


@pytest.mark.parametrize('kind', ['regions', 'objects'])
def test_folder_dataset_layout(tmp_path, small_datasets, monkeypatch, kind):
    spec = fd.DATASETS[kind]
    meta = fd.make_folder_dataset(kind, str(tmp_path))
    assert meta['classes'] == list(spec.classes)
    assert len(meta['palette']) == len(spec.classes)
    names = {}
    for split in ('labeled', 'unlabeled'):
        with open(tmp_path / 'splits' / f'{split}.txt') as f:
            names[split] = [line.strip() for line in f if line.strip()]
    assert not set(names['labeled']) & set(names['unlabeled'])
    assert len(names['labeled']) + len(names['unlabeled']) == 48
    assert len(names['labeled']) == meta['labeled'] == {
        'regions': 6,  # ceil(48 / 8)
        'objects': 6  # ceil(48 / 8)
    }[kind]
    seen = set()
    for name in names['labeled']:
        seen |= set(
            np.unique(
                np.array(
                    Image.open(tmp_path / 'masks' / 'train' /
                               f'{name}.png'))).tolist())
    assert seen == set(range(len(spec.classes)))  # --require-all-classes
    image = Image.open(tmp_path / 'images' / 'val' /
                       f'img_0007{spec.img_suffix}')
    assert image.size == (spec.img_size, spec.img_size)
    assert image.mode == 'RGB'
    label = np.array(Image.open(tmp_path / 'masks' / 'val' / 'img_0007.png'))
    assert label.shape == (spec.img_size, spec.img_size)
    assert label.max() < len(spec.classes)
    # reused as it is; a folder of another kind is refused by name
    assert fd.make_folder_dataset(kind, str(tmp_path)) == meta
    other = 'objects' if kind == 'regions' else 'regions'
    with pytest.raises(FileExistsError, match=other):
        fd.make_folder_dataset(other, str(tmp_path))
    # and so is another version of the same kind
    monkeypatch.setitem(fd.DATASETS, kind,
                        fd.DATASETS[kind]._replace(version='0.0'))
    with pytest.raises(FileExistsError, match=f'not {kind} 0.0'):
        fd.make_folder_dataset(kind, str(tmp_path))


def test_region_classes_follow_hue():
    """The class hue nearest to a region's mean hue is its own class's for
    most regions (hues overlap by design), and the classes tile the images
    without a background class."""
    import colorsys
    hues = np.asarray(fd.HUE_FAMILIES)
    seen, hits, total = set(), 0, 0
    for index in range(40):
        image, label = fd.draw_regions(np.random.default_rng(index), 48)
        for c in np.unique(label):
            r, g, b = image[label == c].mean(axis=0) / 255.
            gap = np.abs(colorsys.rgb_to_hsv(r, g, b)[0] - hues)
            hits += int(np.argmin(np.minimum(gap, 1 - gap)) == c)
            total += 1
            seen.add(int(c))
    assert hits >= 0.9 * total, (hits, total)
    assert seen == set(range(len(fd.REGION_CLASSES)))


def test_edit_template_sets_one_line_each():
    text = 'a = 1\nb = (1, 2)\n# a = 3 in a comment\nc = a\n'
    edited = odc.edit_template(text, dict(a='x', b=(4, 4)))
    assert edited == "a = 'x'\nb = (4, 4)\n# a = 3 in a comment\nc = a\n"
    with pytest.raises(ValueError, match='"d = ..."'):
        odc.edit_template(text, dict(d=1))


def test_configs_keep_the_template(tmp_path, small_datasets):
    meta = fd.make_folder_dataset('objects', str(tmp_path / 'data'))
    template = Config.fromfile(odc.TEMPLATE)
    cfgs = {
        method: odc.build_config(
            odc.Run('objects', init, method, 3), meta,
            str(tmp_path / 'data'), str(tmp_path / method), 2)
        for method, init in (('u2pl', 'pretrained'), ('supervised',
                                                      'scratch'))
    }
    u2pl, sup = cfgs['u2pl'], cfgs['supervised']
    # the template's recipe, untouched
    for key in ('semi_train_cfg', 'contrastive_loss', 'representation_head'):
        assert u2pl.model[key] == template.model[key]
    assert u2pl.custom_hooks == template.custom_hooks
    assert u2pl.optim_wrapper == template.optim_wrapper
    assert sup.optim_wrapper == template.optim_wrapper
    assert u2pl.train_cfg == dict(
        type='EpochBasedTrainLoop', max_epochs=10, val_interval=1)
    assert u2pl.param_scheduler[0].end == 10
    # the user's edits
    assert u2pl.crop_size == (64, 64)
    assert u2pl.model.segmentor.decode_head.num_classes == 6
    assert u2pl.val_dataloader.dataset.metainfo.classes == tuple(
        meta['classes'])
    assert u2pl.randomness.seed == 3
    # the toy network and the starts
    assert u2pl.model.segmentor.backbone.base_channels == 32
    assert u2pl.model.segmentor.backbone.init_cfg.checkpoint == \
        odc.PRETRAINED
    assert sup.model.backbone.init_cfg is None
    # supervised: the student alone, as many iterations as U2PL
    assert sup.model.type == 'EncoderDecoder'
    assert sup.model.decode_head == u2pl.model.segmentor.decode_head
    assert sup.train_dataloader.dataset.ann_file == 'splits/labeled.txt'
    per_epoch = meta['unlabeled'] // 4
    assert sup.train_cfg.max_iters == 10 * per_epoch
    assert sup.train_cfg.val_interval == per_epoch
    assert sup.param_scheduler[0].end == 10 * per_epoch
    assert sup.custom_hooks == []
    assert sup.val_cfg.type == 'ValLoop'
    assert sup.default_hooks.checkpoint.save_best == 'mIoU'
    assert sup.default_hooks.checkpoint.by_epoch is False
    student = u2pl.model.segmentor
    for key in ('backbone', 'data_preprocessor'):
        a, b = dict(sup.model[key]), dict(student[key])
        a.pop('init_cfg', None)
        b.pop('init_cfg', None)
        assert a == b, key


def hand_result(method, seed, **values):
    return dict(
        dataset='regions', init='scratch', method=method, seed=seed,
        **values)


def test_summary_pairs_seeds():
    results = [
        hand_result('supervised', 0, supervised=50.),
        hand_result('supervised', 1, supervised=60.),
        hand_result('supervised', 2, supervised=70.),  # no U2PL pair
        hand_result(
            'u2pl', 0, teacher=52., student=55., kept=55.,
            kept_network='student'),
        hand_result(
            'u2pl', 1, teacher=59., student=58., kept=59.,
            kept_network='teacher'),
    ]
    table = odc.summarize(results, ['regions'], ['scratch'])
    row = table.splitlines()[2].split(' | ')
    # seeds 0 and 1; teacher - sup. = (2, -1): mean 0.5, se 1.5
    assert row[2] == '2'
    assert row[3] == '55.00 ± 5.00'
    assert row[7] == '0.50 ± 1.50'
    assert row[8] == '1.50 ± 3.50'  # student: (5, -2)
    assert row[9] == '2.00 ± 3.00'  # kept: (5, -1)
    assert row[10].startswith('teacher 1, student 1')


def test_shortened_check_trains_both_arms(tmp_path, small_datasets,
                                          monkeypatch):
    """One epoch of each arm on a small ``regions``, from scratch, through
    tools/train.py: the table and the stored results."""
    monkeypatch.setitem(odc.EPOCHS, 'regions', 1)
    results = odc.main([
        '--datasets', 'regions', '--inits', 'scratch', '--seeds', '0',
        '--data-dir',
        str(tmp_path / 'data'), '--work-dir',
        str(tmp_path / 'work'), '--num-workers', '0'
    ])
    by_method = {r['method']: r for r in results}
    assert set(by_method) == {'u2pl', 'supervised'}
    semi, sup = by_method['u2pl'], by_method['supervised']
    assert semi['kept'] == max(semi['teacher'], semi['student'])
    assert semi['best_kept'] >= semi['kept']
    assert sup['best'] >= sup['supervised']
    validations = odc.read_validations(
        str(tmp_path / 'work' / 'regions_scratch_supervised_seed0'))
    assert sup['supervised'] == validations[-1]['mIoU']
    # both arms ran one epoch of SemiDataset: the same iterations
    iters = {}
    for method in ('u2pl', 'supervised'):
        run_dir = tmp_path / 'work' / f'regions_scratch_{method}_seed0'
        last = (run_dir / 'last_checkpoint').read_text().strip()
        iters[method] = torch.load(
            last, map_location='cpu', weights_only=False)['meta']['iter']
    meta = json.loads(
        (tmp_path / 'data' / 'regions' / 'meta.json').read_text())
    assert iters == dict(u2pl=meta['unlabeled'] // 4,
                         supervised=meta['unlabeled'] // 4)
    table = (tmp_path / 'work' / 'own_data_check.md').read_text()
    assert '| regions | scratch | 1 |' in table
    stored = json.loads(
        (tmp_path / 'work' / 'regions_scratch_u2pl_seed0' /
         odc.RESULT_FILE).read_text())
    assert stored['teacher'] == semi['teacher']
    # a second call trains nothing; a run of another schedule is refused
    monkeypatch.setattr(odc, 'train_one', None)
    assert len(odc.main([
        '--datasets', 'regions', '--inits', 'scratch', '--seeds', '0',
        '--data-dir',
        str(tmp_path / 'data'), '--work-dir',
        str(tmp_path / 'work')
    ])) == 2
    monkeypatch.setitem(odc.EPOCHS, 'regions', 2)
    with pytest.raises(SystemExit, match='epochs, version 1, '):
        odc.main([
            '--datasets', 'regions', '--inits', 'scratch', '--seeds', '0',
            '--data-dir',
            str(tmp_path / 'data'), '--work-dir',
            str(tmp_path / 'work')
        ])
