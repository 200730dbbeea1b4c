# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""tools/analysis/benchmark_memory.py and tools/analysis/soak_test.py.

Both tools run for real at the smallest sizes (subprocesses, as a user runs
them); their pure parts (the memory table, the soak verdict) are checked
with hand numbers.
"""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from toy_fixtures import toy_data_root  # noqa: F401  (pytest fixture)
from toy_fixtures import REPO_ROOT, as_cli_options, toy_train_cfg_options

ANALYSIS = osp.join(REPO_ROOT, 'tools', 'analysis')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        name, osp.join(ANALYSIS, name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_memory = load_tool('benchmark_memory')
soak = load_tool('soak_test')


def run_tool(name, args, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, osp.join(ANALYSIS, name)] + args,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout)
    return proc


# ---------------------------------------------------------------------------
# memory benchmark
# ---------------------------------------------------------------------------
def test_memory_table_hand_numbers():
    results = [
        dict(
            variant='supervised',
            amp=False,
            images=4,
            before_mib=100.,
            peak_mib=150.),
        dict(
            variant='u2pl',
            amp=False,
            images=8,
            before_mib=120.,
            peak_mib=220.),
        dict(
            variant='u2pl', amp=True, images=8, before_mib=120.,
            peak_mib=180.),
    ]
    lines = bench_memory.format_table(results).splitlines()
    assert lines[0] == ('| variant | images / iter | AMP | before (MiB) | '
                        'peak (MiB) | peak - before (MiB) | ratio to '
                        'supervised |')
    assert lines[2] == '| supervised | 4 | off | 100 | 150 | 50 | 1.00 |'
    assert lines[3] == '| u2pl | 8 | off | 120 | 220 | 100 | 2.00 |'
    # no supervised run with AMP on: no ratio
    assert lines[4] == '| u2pl | 8 | on | 120 | 180 | 60 | - |'
    # CUDA results add the reserved peak
    results[0]['reserved_mib'] = 256.
    assert bench_memory.format_table(results).splitlines()[2].endswith(
        '| 1.00 | 256 |')


def test_benchmark_memory_cpu(tmp_path):
    out = str(tmp_path / 'memory.json')
    proc = run_tool('benchmark_memory.py', [
        '--crop', '32', '--batch', '2', '--variants', 'supervised', 'u2pl',
        '--steps', '1', '--device', 'cpu', '--out', out
    ])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [
        line for line in proc.stdout.splitlines()
        if line.startswith('| supervised |') or line.startswith('| u2pl |')
    ]
    assert len(rows) == 2
    assert rows[0].startswith('| supervised | 2 | off |')
    assert rows[0].endswith('| 1.00 |')
    assert rows[1].startswith('| u2pl | 4 | off |')
    with open(out) as f:
        results = json.load(f)['results']
    assert [r['variant'] for r in results] == ['supervised', 'u2pl']
    for r in results:
        assert r['crop'] == 32 and r['device'] == 'cpu'
        # the whole process: interpreter, torch, the model, at least 100 MiB
        assert r['peak_mib'] >= r['before_mib'] > 100
    # the U2PL model holds a teacher and the memory bank as well
    assert results[1]['before_mib'] > results[0]['before_mib']


def test_benchmark_memory_rejects_batch_of_one():
    with pytest.raises(ValueError, match='--batch 1'):
        bench_memory.main(['--batch', '1', '--device', 'cpu'])


# ---------------------------------------------------------------------------
# soak test
# ---------------------------------------------------------------------------
def sample(it, rss, fill, capacity=(4, 2), ptr=None, rows=6):
    return dict(
        iter=it,
        rss_mib=rss,
        log_mib=0.0005 * it,  # 0.5 MiB per 1000 iterations
        py_objects=1000 + it // 100,  # 10 per 1000 iterations
        fill=list(fill),
        capacity=list(capacity),
        ptr=list(ptr or [f % c for f, c in zip(fill, capacity)]),
        rows=rows,
        elapsed_s=0.)


def test_soak_verdict_hand_numbers():
    samples = [
        sample(1, 90., (1, 0)),
        sample(1000, 100., (4, 1)),
        sample(2000, 100., (4, 2)),  # every queue full from here
        sample(3000, 101., (4, 2)),
        sample(4000, 102., (4, 2)),
        sample(5000, 103., (4, 2)),
    ]
    assert soak.capacity_violations(samples) == []
    assert soak.first_full_iter(samples) == 2000
    # exactly 1 MiB more per 1000 iterations
    assert soak.growth_per_1000(samples[2:], 'rss_mib') == pytest.approx(1.)
    result = soak.verdict(samples, max_growth=2.)
    assert (result['full_iter'], result['fit_from'],
            result['fit_samples']) == (2000, 2000, 4)
    assert result['growth'] == pytest.approx(1.)
    assert result['log_growth'] == pytest.approx(0.5)
    assert result['objects_growth'] == pytest.approx(10.)
    assert result['rss'] == 'flat' and result['ok']
    assert soak.verdict(samples, max_growth=0.5)['rss'] == 'growing'
    assert not soak.verdict(samples, max_growth=0.5)['ok']
    # settle: the fit starts at 80 % of the run: too few samples
    late = soak.verdict(samples, max_growth=2., settle=0.8)
    assert late['rss'] == 'inconclusive' and late['ok']
    text = soak.verdict_text(result)
    assert '+1.00 MiB per 1000 iterations from iteration 2000' in text
    assert 'every class full from iteration 2000' in text
    assert 'log history (MessageHub, kept by design): +0.50 MiB' in text
    assert '- Python objects: +10 per 1000 iterations' in text
    assert text.endswith('- verdict: PASS')


def test_robust_slope_ignores_a_spike():
    # pairwise slopes (x 1000): 1, 1, 1, 5, 1, 1, 19/3, 1, 9, 17 -> median 1
    xs = [2000, 3000, 4000, 5000, 6000]
    ys = [100., 101., 102., 103., 120.]
    assert soak.robust_slope(xs, ys) == pytest.approx(1e-3)
    # thinned to 3 points: 2000, 4000, 6000 -> slopes 1, 5, 9 (x 1000)
    assert soak.robust_slope(xs, ys, max_points=3) == pytest.approx(5e-3)
    assert soak.robust_slope([5, 5], [1., 2.]) is None


def test_soak_capacity_violations():
    samples = [
        sample(10, 1., (5, 2), ptr=(1, 0)),
        sample(20, 1., (4, 2), ptr=(0, 2)),
        sample(30, 1., (4, 2), rows=7),
    ]
    assert soak.capacity_violations(samples) == [
        'iter 10: class 0 holds 5 rows, capacity 4',
        'iter 20: class 1 write pointer 2 outside [0, 2)',
        'iter 30: feature buffer has 7 rows, expected 6',
    ]
    result = soak.verdict(samples, max_growth=2.)
    assert not result['capacity_ok'] and not result['ok']
    assert 'CAPACITY VIOLATED: iter 10: class 0' in soak.verdict_text(result)


def test_soak_table_subsamples():
    samples = [sample(i, 100. + i, (4, 2)) for i in range(1, 11)]
    lines = soak.samples_table(samples, max_rows=4).splitlines()
    assert [line.split(' | ')[0]
            for line in lines[2:]] == ['| 1', '| 4', '| 7', '| 10']
    assert lines[2] == '| 1 | 101.0 | 0.00 | 1000 | 6 / 6 | 4 2 | 0.0 |'


def test_soak_run(toy_data_root, tmp_path):  # noqa: F811
    work_dir = str(tmp_path / 'soak')
    options = toy_train_cfg_options(
        toy_data_root,
        max_iters=30,
        val_interval=30,
        warmup_iters=2,
        with_contrast=True)
    proc = run_tool(
        'soak_test.py',
        [
            '--iters', '30', '--bank-size', '8', '--warmup', '2', '--interval',
            '3', '--max-growth', '1e9', '--work-dir', work_dir, '--cfg-options'
        ] + as_cli_options(options),
        timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '| iter | RSS (MiB) | log history (MiB) |' in proc.stdout
    assert '- memory bank: capacity respected at every sample' in proc.stdout
    with open(osp.join(work_dir, 'soak.json')) as f:
        report = json.load(f)
    samples = report['samples']
    assert [s['iter'] for s in samples] == [1] + list(range(3, 31, 3))
    for s in samples:
        assert s['capacity'] == [8] * 6 and s['rows'] == 48
        assert all(0 <= f <= 8 for f in s['fill'])
        assert s['rss_mib'] > 100
    # nothing enters the bank during the warm-up; afterwards it fills
    assert sum(samples[0]['fill']) == 0
    assert sum(samples[-1]['fill']) > 8
    assert report['verdict']['capacity_ok'] and report['verdict']['ok']
    with open(osp.join(work_dir, 'soak.md')) as f:
        assert '- verdict: PASS' in f.read()


# ---------------------------------------------------------------------------
# contrastive-loss benchmark
# ---------------------------------------------------------------------------
def test_contrastive_comparison_hand_numbers():
    bench = load_tool('benchmark_contrastive_loss')

    def stats(ms):
        return dict(forward_backward=dict(median_ms=ms))

    table = bench.format_comparison(
        stats(30.), stats(40.), dict(median_ms=800.))
    assert '| unsupervised loss L_u | 40.0 | 1.00 | 5.0 % |' in table
    assert '| contrastive loss L_c (bank included) | 30.0 | 0.75 | 3.8 % |' \
        in table
    assert '| one U2PL iteration | 800.0 | 20.00 | 100 % |' in table
    without = bench.format_comparison(stats(30.), stats(40.))
    assert '| 30.0 | 0.75 | n/a |' in without


def test_benchmark_contrastive_loss_cpu_run():
    proc = run_tool('benchmark_contrastive_loss.py', [
        '--device', 'cpu', '--sizes', 'small', '--repeats', '1', '--warmup',
        '0', '--iteration',
        'configs/u2pl/u2pl_deeplabv3plus_r18-d8_1xb4+4-2k_toy-1-16-64x64.py'
    ])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for line in ('| contrastive loss | mean ms',
                 '| unsupervised loss | mean ms',
                 '| contrastive loss L_c (bank included) |',
                 '| one U2PL iteration |',
                 'CPU allocator: freed memory kept for reuse'):
        assert line in out, out


# ---------------------------------------------------------------------------
# step speed
# ---------------------------------------------------------------------------
def test_benchmark_step_cpu():
    """Every variant is timed; the config's teacher-pass setting is marked."""
    proc = run_tool('benchmark_step.py', [
        '--crop', '32', '--batch', '2', '--rounds', '1', '--warmup', '0',
        '--device', 'cpu', '--threads', '1'
    ])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        line.split(' | ')[0].lstrip('| '): line
        for line in proc.stdout.splitlines() if line.startswith('| ')
    }
    for name in ('supervised (4 images)',
                 'floor (supervised + teacher forward on B_u)',
                 'floor with L_c (supervised + teacher forward on B_l + B_u)',
                 'u2pl-nocontrast', 'u2pl-two-passes',
                 'u2pl-reuse (the config)', 'teacher_pseudo_labels',
                 'contrastive_loss', 'backward, optimizer, rest'):
        assert name in rows, (name, proc.stdout)
    assert rows['supervised (4 images)'].endswith('| 1.00 |')
    # the toy config runs one teacher pass; the other setting is timed too
    assert proc.stdout.count('(the config)') == 1


# ---------------------------------------------------------------------------
# host reads (synchronisations on a GPU)
# ---------------------------------------------------------------------------
def test_host_read_counter_hand_counted():
    counter = load_tool('count_host_syncs').HostReadCounter()
    x = torch.arange(6)
    original_bool = torch.Tensor.__bool__
    with counter.watch():
        assert torch.Tensor.__bool__ is not original_bool
        _ = x[x > 2]  # boolean-mask read
        y = x.clone()
        y[y > 4] = 0  # boolean-mask write
        _ = bool(x.any())
        _ = x.nonzero()
        _ = torch.where(x > 1)  # one argument: nonzero
        _ = float(x.sum())
        _ = torch.unique(x)  # counted once, whatever it calls inside
        # no host reads: shapes, masked arithmetic, three-argument where
        _ = torch.where(x > 1, x, 0).sum() + x.shape[0]
        _ = x[1:3]
    assert counter.total == 7
    kinds = sorted(kind for _, kind in counter.counts)
    assert kinds == sorted([
        'boolean-mask read', 'boolean-mask write', 'bool', 'nonzero',
        'torch.where', 'float', 'torch.unique'
    ])
    # every site is this file
    assert all(
        site.startswith('tests/test_tools/test_benchmarks.py:')
        for site, _ in counter.counts)
    # the patches are gone after the block
    _ = bool(x.any())
    assert counter.total == 7 and torch.Tensor.__bool__ is original_bool
    # reads inside torch.optim (CPU step counters) are tallied apart
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    param.grad = torch.ones(3)
    with counter.watch():
        optimizer.step()
    assert counter.total == 7 and counter.optimizer_reads > 0


def test_count_host_syncs_cpu_run():
    """The U2PL step reads the host only where it must.

    A regression guard: a new ``.item()``, ``bool(tensor)``, ``nonzero``
    or boolean-mask indexing in the segmentor or the losses fails here.
    """
    proc = run_tool('count_host_syncs.py',
                    ['--crop', '32', '--batch', '2', '--device', 'cpu'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = proc.stdout.split('host reads in one training step')
    assert len(tables) == 3, proc.stdout

    def ours(table):
        return sorted(
            line.split(' | ')[0].lstrip('| ').split(':')[0] + ' ' +
            line.split('(')[1].split(')')[0] for line in table.splitlines()
            if line.startswith('| mmseg_u2pl/'))

    # without the contrastive term: the non-finite loss check only
    assert ours(tables[1]) == [
        'mmseg_u2pl/models/utils/nonfinite.py nonfinite_loss_terms'
    ]
    # with it: the label check, the candidate counts (which size the bank
    # push) and the push's finite-row check
    assert ours(tables[2]) == [
        'mmseg_u2pl/models/losses/contrastive_loss.py _check_inputs',
        'mmseg_u2pl/models/losses/contrastive_loss.py _update_memory_bank',
        'mmseg_u2pl/models/losses/memory_bank.py _plan_push',
        'mmseg_u2pl/models/utils/nonfinite.py nonfinite_loss_terms',
    ]
    assert '| u2pl | 6 | CUDA only |' in proc.stdout, proc.stdout
