# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""The pure parts of tools/analysis/label_efficiency.py.

No training runs: ``subprocess.run`` is replaced by a fake that writes the
``scalars.json`` a training would leave, with hand-chosen mIoU values.
"""
import importlib.util
import json
import os
import os.path as osp
import subprocess
from fractions import Fraction

import pytest
from mmengine.config import Config
from toy_fixtures import REPO_ROOT

from mmseg_u2pl.models.segmentors.u2pl import DEFAULT_SEMI_TRAIN_CFG

SCRIPT = osp.join(REPO_ROOT, 'tools', 'analysis', 'label_efficiency.py')
_spec = importlib.util.spec_from_file_location('label_efficiency', SCRIPT)
le = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(le)

# hand numbers: two seeds of (a), (c), (d); one seed of (b)
HAND = {
    'supervised_1-16_seed0': 40.0,
    'supervised_1-16_seed1': 44.0,
    'supervised-full_full_seed0': 60.0,
    'supervised-full_full_seed1': 62.0,
    'u2pl_1-16_seed0': 50.0,
    'u2pl_1-16_seed1': 56.0,
    'u2pl-nocontrast_1-16_seed0': 45.0,
}


def result(name, wall_s=60.0):
    method, fraction, seed = name.rsplit('_', 2)
    return dict(
        method=method,
        fraction=fraction,
        seed=int(seed[4:]),
        miou=HAND[name],
        wall_s=wall_s)


def test_fractions_and_plan():
    assert le.parse_fraction('1-16') == Fraction(1, 16)
    assert le.parse_fraction('1') == 1
    assert le.parse_fraction('full') == 1
    assert le.fraction_label('1-4') == '1/4'
    assert le.fraction_label('full') == 'all'
    for bad in ('1/16', 'half', '3-2', '0-4'):
        with pytest.raises(ValueError, match=repr(bad)):
            le.parse_fraction(bad)
    runs = le.plan_runs(list(le.METHODS), ['1-16', '1-8'], [0, 1])
    # (3 methods x 2 fractions + the upper bound) x 2 seeds, seed by seed,
    # longest first within a seed
    assert len(runs) == 14
    assert [r.seed for r in runs] == [0] * 7 + [1] * 7
    assert [r.method for r in runs[:2]] == ['u2pl'] * 2
    assert runs[6].method == runs[-1].method == 'supervised'
    full = [r for r in runs if r.method == 'supervised-full']
    assert [(r.fraction, r.seed) for r in full] == [('full', 0), ('full', 1)]
    assert runs[0].name == 'u2pl_1-16_seed0'
    with pytest.raises(ValueError, match='fixmatch'):
        le.plan_runs(['fixmatch'], ['1-16'], [0])


def test_gap_closed_and_summary():
    assert le.gap_closed(53, 42, 61) == pytest.approx(11 / 19)
    assert le.gap_closed(50, 50, 50) is None
    rows = le.summarize(
        [result(n) for n in HAND],
        ['supervised', 'u2pl-nocontrast', 'u2pl', 'supervised-full'], ['1-16'])
    by = {(r['method'], r['fraction']): r for r in rows}
    assert [(r['method'], r['fraction'])
            for r in rows] == [('supervised', '1-16'),
                               ('u2pl-nocontrast', '1-16'), ('u2pl', '1-16'),
                               ('supervised-full', 'full')]
    sup, u2pl = by[('supervised', '1-16')], by[('u2pl', '1-16')]
    assert sup['miou'] == 42 and sup['miou_std'] == pytest.approx(8**0.5)
    assert 'gap_closed' not in sup
    assert by[('supervised-full', 'full')]['miou'] == 61
    # from the means: (53 - 42) / (61 - 42)
    assert u2pl['miou'] == 53 and u2pl['miou_std'] == pytest.approx(18**0.5)
    assert u2pl['gap_closed'] == pytest.approx(11 / 19)
    # per seed: 10 / 20 = 0.5 and 12 / 18 = 2 / 3, sample std
    assert u2pl['gap_closed_std'] == pytest.approx((1 / 6) / 2**0.5)
    nocontrast = by[('u2pl-nocontrast', '1-16')]
    assert nocontrast['seeds'] == [0]
    assert nocontrast['gap_closed'] == pytest.approx(3 / 19)
    assert nocontrast['gap_closed_std'] is None

    table = le.format_markdown(rows).splitlines()
    assert table[0].startswith('| labeled | method | mIoU')
    assert table[2] == '| 1/16 | supervised | 42.0 ± 2.8 | 2 |  | 1.0 min |'
    assert table[3] == ('| 1/16 | u2pl-nocontrast | 45.0 | 1 | 15.8 % | '
                        '1.0 min |')
    assert table[4] == ('| 1/16 | u2pl | 53.0 ± 4.2 | 2 | 57.9 ± 11.8 % | '
                        '1.0 min |')
    assert table[
        5] == '| all | supervised-full | 61.0 ± 1.4 | 2 |  | 1.0 min |'


def test_summary_without_gap_or_results():
    # an upper bound below the lower one: no gap to close
    results = [
        dict(method='supervised', fraction='1-8', seed=0, miou=50., wall_s=1.),
        dict(method='u2pl', fraction='1-8', seed=0, miou=55., wall_s=1.),
        dict(
            method='supervised-full',
            fraction='full',
            seed=0,
            miou=45.,
            wall_s=1.),
    ]
    rows = le.summarize(results, ['supervised', 'u2pl', 'supervised-full'],
                        ['1-8', '1-4'])
    table = le.format_markdown(rows).splitlines()
    assert table[3] == '| 1/8 | u2pl | 55.0 | 1 | n/a | 0.0 min |'
    assert table[5] == '| 1/4 | u2pl | missing | 0 | n/a |  |'


def test_plot_writes_png(tmp_path):
    rows = le.summarize([result(n) for n in HAND], list(le.METHODS), ['1-16'])
    rows.append(
        dict(method='u2pl', fraction='1-8', seeds=[0], miou=58., miou_std=0.))
    path = str(tmp_path / 'plot.png')
    le.plot(rows, path)
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert os.path.getsize(path) > 5000


def test_train_command_reads_the_config():
    settings = le.config_settings(le.METHODS['u2pl'])
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, le.METHODS['u2pl']), import_custom_modules=False)
    hook = [h['type'] for h in cfg.custom_hooks].index('MeanTeacherHook')
    assert settings['max_iters'] == cfg.train_cfg.max_iters
    assert settings['hook'] == hook
    assert settings['warmup_iters'] == cfg.custom_hooks[hook].warmup_iters
    assert settings['semi'] and settings['schedulers'] == [0]
    # half the iterations: half the warm-up (rounded)
    iters, warmup = le.schedule(settings, settings['max_iters'] // 2, None)
    assert warmup == round(settings['warmup_iters'] / 2)
    assert le.schedule(settings, 10, 3) == (10, 3)
    with pytest.raises(ValueError, match='--warmup 10'):
        le.schedule(settings, 10, 10)

    spec = le.RunSpec('u2pl', '1-8', 2)
    cmd = le.train_command(spec, settings, '/tmp/run', 10, 3, 0, '/data')
    assert cmd[1].endswith(osp.join('tools', 'train.py'))
    assert cmd[2].endswith(le.METHODS['u2pl'])
    opts = cmd[cmd.index('--cfg-options') + 1:]
    for expected in ('randomness.seed=2', 'train_cfg.max_iters=10',
                     'train_cfg.val_interval=10', 'param_scheduler.0.end=10',
                     f'custom_hooks.{hook}.warmup_iters=3',
                     'train_dataloader.num_workers=0',
                     'train_dataloader.persistent_workers=False',
                     'train_dataloader.dataset.labeled.data_root=/data',
                     'val_dataloader.dataset.data_root=/data',
                     'train_dataloader.dataset.labeled.ann_file='
                     'splits/labeled_1-8.txt',
                     'train_dataloader.dataset.unlabeled.ann_file='
                     'splits/unlabeled_1-8.txt'):
        assert expected in opts
    sup = le.config_settings(le.METHODS['supervised'])
    assert sup['hook'] is None and not sup['semi']
    opts = le.train_command(
        le.RunSpec('supervised', '1-4', 0), sup, '/tmp/r', 10, 0, 2, None)
    assert 'train_dataloader.dataset.ann_file=splits/labeled_1-4.txt' in opts
    assert 'train_dataloader.persistent_workers=True' in opts
    assert not any('warmup' in o or 'data_root' in o for o in opts)
    full = le.config_settings(le.METHODS['supervised-full'])
    opts = le.train_command(
        le.RunSpec('supervised-full', 'full', 0), full, '/tmp/r', 10, 0, 0,
        None)
    assert not any('ann_file' in o for o in opts)
    # --cfg-options of the benchmark come last, for every run
    extra = ['model.semi_train_cfg.reuse_teacher_forward=False']
    opts = le.train_command(
        spec, settings, '/tmp/run', 10, 3, 0, None, extra_options=extra)
    assert opts[-1] == extra[0]
    assert le.parse_args(['--cfg-options', extra[0]]).cfg_options == extra


def write_scalars(run_dir, miou, iters, teacher, stamp='20260101_000000'):
    vis = osp.join(run_dir, stamp, 'vis_data')
    os.makedirs(vis, exist_ok=True)
    key = 'teacher/mIoU' if teacher else 'mIoU'
    with open(osp.join(vis, 'scalars.json'), 'w') as f:
        for it in range(1, iters + 1):
            f.write(json.dumps(dict(iter=it, step=it, time=0.25)) + '\n')
        f.write(json.dumps({key: miou, 'step': iters}) + '\n')


def test_final_metrics(tmp_path):
    run_dir = str(tmp_path / 'run')
    write_scalars(run_dir, 33.5, 4, teacher=True)
    metrics = le.final_metrics(run_dir, 4)
    assert metrics['miou'] == 33.5 and metrics['sec_per_iter'] == 0.25
    with pytest.raises(RuntimeError, match='iteration 5'):
        le.final_metrics(run_dir, 5)


@pytest.fixture
def fake_training(monkeypatch):
    """Replace the training subprocess; record the runs it was asked for."""
    calls = []

    def fake_run(cmd, cwd=None, env=None, stdout=None, stderr=None):
        assert env['OMP_NUM_THREADS'] == '1'
        run_dir = cmd[cmd.index('--work-dir') + 1]
        iters = int(
            next(o for o in cmd
                 if o.startswith('train_cfg.max_iters=')).split('=')[1])
        name = osp.basename(run_dir)
        calls.append(name)
        write_scalars(run_dir, HAND[name], iters, 'u2pl' in name)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(le.subprocess, 'run', fake_run)
    return calls


def fake_data_root(tmp_path):
    root = tmp_path / 'toy'
    (root / 'splits').mkdir(parents=True)
    for kind in ('labeled', 'unlabeled'):
        (root / 'splits' / f'{kind}_1-16.txt').write_text('a\n')
    return str(root)


def test_main_skips_finished_runs(tmp_path, fake_training):
    work_dir = str(tmp_path / 'le')
    argv = [
        '--fractions', '1-16', '--seeds', '0', '1', '--methods', 'supervised',
        'u2pl', 'supervised-full', '--iters', '6', '--warmup', '2', '--jobs',
        '2', '--data-root',
        fake_data_root(tmp_path), '--work-dir', work_dir
    ]
    rows = le.main(argv)
    assert sorted(fake_training) == sorted(n for n in HAND
                                           if 'nocontrast' not in n)
    u2pl = [r for r in rows if r['method'] == 'u2pl'][0]
    assert u2pl['gap_closed'] == pytest.approx(11 / 19)
    with open(osp.join(work_dir, 'label_efficiency.md')) as f:
        assert '| 1/16 | u2pl | 53.0 ± 4.2 | 2 | 57.9 ± 11.8 % |' in f.read()
    with open(osp.join(work_dir, 'label_efficiency.json')) as f:
        saved = json.load(f)
    assert len(saved['runs']) == 6
    assert saved['settings']['schedules']['u2pl'] == dict(iters=6, warmup=2)
    assert osp.getsize(osp.join(work_dir, 'label_efficiency.png')) > 0
    with open(osp.join(work_dir, 'u2pl_1-16_seed1', le.RESULT_FILE)) as f:
        stored = json.load(f)
    assert (stored['miou'], stored['iters'], stored['warmup']) == (56., 6, 2)

    # everything is there: nothing is trained again
    del fake_training[:]
    le.main(argv)
    assert fake_training == []

    # an interrupted run (no result file) is trained again from scratch
    run_dir = osp.join(work_dir, 'u2pl_1-16_seed0')
    os.remove(osp.join(run_dir, le.RESULT_FILE))
    stale = osp.join(run_dir, 'stale.txt')
    open(stale, 'w').close()
    le.main(argv)
    assert fake_training == ['u2pl_1-16_seed0']
    assert not osp.exists(stale)

    # --force trains every run again
    del fake_training[:]
    le.main(argv + ['--force'])
    assert len(fake_training) == 6

    # another schedule must not mix with the stored one
    longer = list(argv)
    longer[longer.index('--iters') + 1] = '8'
    with pytest.raises(ValueError, match='iters=6, warmup=2, not iters=8'):
        le.main(longer)


def test_main_reports_missing_split_and_failed_run(tmp_path, monkeypatch):
    argv = [
        '--fractions', '1-8', '--seeds', '0', '--methods', 'supervised',
        '--data-root',
        fake_data_root(tmp_path), '--work-dir',
        str(tmp_path / 'le'), '--iters', '4'
    ]
    with pytest.raises(FileNotFoundError, match='labeled_1-8.txt'):
        le.main(argv)

    def failing_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1)

    monkeypatch.setattr(le.subprocess, 'run', failing_run)
    argv[1] = '1-16'
    with pytest.raises(
            SystemExit, match='supervised_1-16_seed0: training '
            'failed'):
        le.main(argv)
    assert not osp.exists(
        osp.join(
            str(tmp_path / 'le'), 'supervised_1-16_seed0', le.RESULT_FILE))


# ----------------------------------------------------------------------
# the ToyShapes21 benchmark


def test_toy21_benchmark_plan_and_configs():
    bench = le.BENCHMARKS['toy21']
    assert list(bench.methods) == [
        'supervised', 'cutmix-mt', 'u2pl-nocontrast', 'u2pl',
        'u2pl-reliable-neg', 'u2pl-all-neg', 'supervised-full'
    ]
    assert bench.fractions == ('1-16', ) and len(bench.seeds) >= 6
    runs = le.plan_runs(
        list(bench.methods), ['1-16'], bench.seeds, bench.methods)
    assert len(runs) == 7 * len(bench.seeds)
    with pytest.raises(ValueError, match='cutmix-mt'):
        le.plan_runs(['cutmix-mt'], ['1-16'], [0])  # not a toy method
    cfgs = {
        m: Config.fromfile(
            osp.join(REPO_ROOT, path), import_custom_modules=False)
        for m, path in bench.methods.items()
    }
    for method in le.SEMI_METHODS:
        settings = le.config_settings(bench.methods[method])
        assert settings['semi'] and settings['hook'] is not None
    semi = {
        m: cfg.model.semi_train_cfg
        for m, cfg in cfgs.items() if 'semi_train_cfg' in cfg.model
    }
    # the CutMix mean teacher: no entropy filter, no contrastive loss; the
    # others keep the paper's alpha_0 = 20 % (U2PL's default)
    alpha_0 = {
        m: cfg.get('alpha_0', DEFAULT_SEMI_TRAIN_CFG['alpha_0'])
        for m, cfg in semi.items()
    }
    assert alpha_0 == {
        'cutmix-mt': 0,
        'u2pl-nocontrast': 20,
        'u2pl': 20,
        'u2pl-reliable-neg': 20,
        'u2pl-all-neg': 20
    }
    for method in ('cutmix-mt', 'u2pl-nocontrast'):
        assert cfgs[method].model.get('contrastive_loss') is None
    sources = {
        m: cfgs[m].model.contrastive_loss.negative_source
        for m in ('u2pl', 'u2pl-reliable-neg', 'u2pl-all-neg')
    }
    assert sources == {
        'u2pl': 'unreliable',
        'u2pl-reliable-neg': 'reliable',
        'u2pl-all-neg': 'all'
    }
    # one schedule for every method of the table
    assert len({cfg.train_cfg.max_iters for cfg in cfgs.values()}) == 1
    args = le.parse_args(['--benchmark', 'toy21'])
    assert args.methods == list(bench.methods)
    assert args.seeds == list(bench.seeds)
    assert args.work_dir == bench.work_dir


TOY21_HAND = {  # seed: (supervised, u2pl-nocontrast, u2pl, u2pl-reliable-neg)
    0: (40., 50., 53., 52.),
    1: (42., 49., 50., 51.),
    2: (38., 47., 51., 48.),
}


def toy21_results():
    methods = ('supervised', 'u2pl-nocontrast', 'u2pl', 'u2pl-reliable-neg')
    results = [
        dict(method=m, fraction='1-16', seed=seed, miou=v, wall_s=60.)
        for seed, values in TOY21_HAND.items()
        for m, v in zip(methods, values)
    ]
    results += [
        dict(
            method='supervised-full',
            fraction='full',
            seed=seed,
            miou=60.,
            wall_s=60.) for seed in (0, 1)
    ]
    return results


def test_paired_differences():
    pairs = [('u2pl', 'u2pl-nocontrast'), ('u2pl', 'u2pl-reliable-neg'),
             ('u2pl', 'u2pl-all-neg'), ('supervised-full', 'supervised')]
    rows = le.paired_differences(toy21_results(), pairs, ['1-16'])
    by = {(r['a'], r['b']): r for r in rows}
    # u2pl - nocontrast per seed: 3, 1, 4 -> mean 8/3, sample std
    # sqrt(((1/3)^2 + (5/3)^2 + (4/3)^2) / 2) = sqrt(7/3), se = sqrt(7/9)
    diff = by[('u2pl', 'u2pl-nocontrast')]
    assert diff['seeds'] == [0, 1, 2]
    assert diff['mean'] == pytest.approx(8 / 3)
    assert diff['std'] == pytest.approx((7 / 3)**0.5)
    assert diff['se'] == pytest.approx((7 / 9)**0.5)
    # unreliable - reliable: 1, -1, 3 -> mean 1, std 2, se 2 / sqrt(3)
    diff = by[('u2pl', 'u2pl-reliable-neg')]
    assert diff['mean'] == pytest.approx(1.)
    assert diff['se'] == pytest.approx(2 / 3**0.5)
    # no all-pixel runs; the upper bound pairs with its own fraction
    assert by[('u2pl', 'u2pl-all-neg')]['mean'] is None
    assert by[('supervised-full', 'supervised')]['seeds'] == [0, 1]
    assert by[('supervised-full', 'supervised')]['mean'] == 19.
    table = le.format_paired_markdown(rows).splitlines()
    assert table[2] == '| 1/16 | u2pl - u2pl-nocontrast | +2.67 ± 0.88 | 3 |'
    assert table[3] == ('| 1/16 | u2pl - u2pl-reliable-neg | +1.00 ± 1.15 '
                        '| 3 |')
    assert table[4] == '| 1/16 | u2pl - u2pl-all-neg | missing | 0 |'
    assert table[5] == ('| 1/16 | supervised-full - supervised | '
                        '+19.00 ± 1.00 | 2 |')


def test_standard_error_table():
    rows = le.summarize(
        toy21_results(),
        ['supervised', 'u2pl', 'u2pl-reliable-neg', 'supervised-full'],
        ['1-16'])
    table = le.format_markdown(rows, error='se').splitlines()
    assert 'mean ± s.e.' in table[0]
    # supervised 40, 42, 38: std 2, se 2 / sqrt(3) = 1.15
    assert table[2].startswith('| 1/16 | supervised | 40.0 ± 1.2 | 3 |')
    # u2pl 53, 50, 51 -> 51.33; gap closed from the means: 11.33 / 20
    assert table[3].startswith('| 1/16 | u2pl | 51.3 ± 0.9 | 3 | 56.7 ± ')
    with pytest.raises(ValueError, match="'var'"):
        le.format_markdown(rows, error='var')


def test_main_toy21_writes_paired_differences(tmp_path, monkeypatch):
    hand = {
        f'{m}_1-16_seed{s}': v
        for s, values in TOY21_HAND.items()
        for m, v in zip(('supervised', 'u2pl-nocontrast', 'u2pl'), values)
    }

    def fake_run(cmd, cwd=None, env=None, stdout=None, stderr=None):
        run_dir = cmd[cmd.index('--work-dir') + 1]
        assert 'toy21' in cmd[2]
        iters = int(
            next(o for o in cmd
                 if o.startswith('train_cfg.max_iters=')).split('=')[1])
        name = osp.basename(run_dir)
        write_scalars(run_dir, hand[name], iters, 'u2pl' in name)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(le.subprocess, 'run', fake_run)
    work_dir = str(tmp_path / 'le21')
    le.main([
        '--benchmark', 'toy21', '--methods', 'supervised', 'u2pl-nocontrast',
        'u2pl', '--seeds', '0', '1', '2', '--iters', '6', '--jobs', '2',
        '--data-root',
        fake_data_root(tmp_path), '--work-dir', work_dir
    ])
    with open(osp.join(work_dir, 'label_efficiency.md')) as f:
        text = f.read()
    assert '| 1/16 | u2pl - u2pl-nocontrast | +2.67 ± 0.88 | 3 |' in text
    assert 'reliable' not in text  # pairs of methods not run are left out
    with open(osp.join(work_dir, 'label_efficiency.json')) as f:
        saved = json.load(f)
    assert saved['settings']['benchmark'] == 'toy21'
    assert saved['runs'][0]['config'].startswith('configs/')
    assert 'toy21' in saved['runs'][0]['config']
