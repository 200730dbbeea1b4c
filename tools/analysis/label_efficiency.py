# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Label-efficiency benchmarks on the embedded datasets.

``--benchmark toy`` (the default) is the label-efficiency study of the
6-class toy dataset described below. ``--benchmark toy21`` is the benchmark
in the paper's regime on ToyShapes21 (21 classes, pretrained backbone): at
one scarce-label fraction (1/16) it trains supervised, a CutMix mean
teacher (``cutmix-mt``: U2PL without ``L_c`` and with ``alpha_0 = 0``, i.e.
every pixel's pseudo-label trains the student), U2PL without ``L_c``, full
U2PL, full U2PL with negatives from reliable pixels and from all pixels
(paper Table 4), and supervised on all labels, over 6 paired seeds; the
table gives mean ± standard error, the gap closed, and the paired
differences (full minus without ``L_c``, unreliable minus reliable / all
negatives, ...) with their standard errors. See docs/benchmarks.md
(ToyShapes21) for its schedule and run time.

The toy benchmark:

For each labeled fraction (default 1/16, 1/8, 1/4) it trains, with the same
network, schedule and seed: (a) ``supervised`` only on the labeled part,
(b) ``u2pl-nocontrast`` (U2PL without the contrastive term), (c) full
``u2pl``, and (d) ``supervised-full`` on all labels (the upper bound, once
per seed). It reports the final validation mIoU (the teacher's for U2PL),
mean and standard deviation over the seeds, and for every U2PL row the
share of the gap between (a) and (d) that it closes::

    gap closed = (mIoU(c) - mIoU(a)) / (mIoU(d) - mIoU(a))

from the means over seeds; its ``±`` is the spread of the same share
computed seed by seed. Outputs in ``--work-dir``: ``label_efficiency.md``
(the table), ``label_efficiency.json`` (every run and the table's numbers)
and ``label_efficiency.png`` (mIoU against the labeled fraction, one line
per method, the upper bound dashed).

Each training is a ``tools/train.py`` subprocess (``OMP_NUM_THREADS=1``), so
what is measured is exactly what a user runs; ``--jobs`` of them run at
once. A finished run leaves ``<run>/label_efficiency_result.json`` and is
reused by the next invocation (an interrupted benchmark resumes where it
stopped); ``--force`` trains again. The schedule (``--iters``, ``--warmup``)
defaults to the configs' own.

Run time on 2 CPU cores, toy configs with 2000 iterations (see
docs/benchmarks.md): ``--quick`` (1/16, one seed: 4 runs, ``--jobs 2``)
21 minutes measured while other trainings shared the cores, about 13 on free
cores; the full benchmark (3 fractions x 3 methods + the upper bound: 10
runs a seed, ``--jobs 2``) 24 minutes a seed measured on free cores, so
about 1 h 15 min for the default 3 seeds.

Examples::

    python tools/analysis/label_efficiency.py --quick
    python tools/analysis/label_efficiency.py --jobs 2
    python tools/analysis/label_efficiency.py --benchmark toy21 --jobs 2
    python tools/analysis/label_efficiency.py --fractions 1-16 1-8 \\
        --seeds 0 1 --iters 1000 --work-dir work_dirs/le_short
"""
import argparse
import json
import os
import os.path as osp
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from fractions import Fraction
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

if osp.dirname(osp.abspath(__file__)) not in sys.path:
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import ROOT  # noqa: E402
from split_utils import parse_fraction as parse_share  # noqa: E402

#: Method name -> config. ``supervised`` and the U2PL configs are trained on
#: the split lists of each fraction; ``supervised-full`` as it is.
METHODS = {
    'supervised':
    'configs/supervised/deeplabv3plus_r18-d8_1xb4-2k_toy-1-16-64x64.py',
    'u2pl-nocontrast':
    'configs/u2pl/'
    'u2pl-nocontrast_deeplabv3plus_r18-d8_1xb4+4-2k_toy-1-16-64x64.py',
    'u2pl':
    'configs/u2pl/u2pl_deeplabv3plus_r18-d8_1xb4+4-2k_toy-1-16-64x64.py',
    'supervised-full':
    'configs/supervised/deeplabv3plus_r18-d8_1xb4-2k_toy-full-64x64.py',
}
_TOY21 = '1xb4+4-1k_toy21-1-16-64x64.py'
#: The ToyShapes21 benchmark: method -> config (1/16 labels; the split of
#: another fraction is set on the command line as for the toy).
TOY21_METHODS = {
    'supervised':
    'configs/supervised/deeplabv3plus_r18-d8_1xb4-1k_toy21-1-16-64x64.py',
    'cutmix-mt':
    'configs/u2pl/cutmix-mt_deeplabv3plus_r18-d8_' + _TOY21,
    'u2pl-nocontrast':
    'configs/u2pl/u2pl-nocontrast_deeplabv3plus_r18-d8_' + _TOY21,
    'u2pl':
    'configs/u2pl/u2pl_deeplabv3plus_r18-d8_' + _TOY21,
    'u2pl-reliable-neg':
    'configs/u2pl/u2pl-reliable-neg_deeplabv3plus_r18-d8_' + _TOY21,
    'u2pl-all-neg':
    'configs/u2pl/u2pl-all-neg_deeplabv3plus_r18-d8_' + _TOY21,
    'supervised-full':
    'configs/supervised/deeplabv3plus_r18-d8_1xb4-1k_toy21-full-64x64.py',
}
LOWER, UPPER = 'supervised', 'supervised-full'
SEMI_METHODS = ('cutmix-mt', 'u2pl-nocontrast', 'u2pl', 'u2pl-reliable-neg',
                'u2pl-all-neg')
#: The fraction of the upper bound (every training label).
FULL = 'full'
#: Split lists the toy generator writes
#: (``tools/dataset_converters/make_toy_dataset.py``).
SPLIT_FILE = 'splits/{kind}_{fraction}.txt'
RESULT_FILE = 'label_efficiency_result.json'
#: Longest runs of a seed first, so that parallel jobs end together.
COST_ORDER = ('u2pl', 'u2pl-reliable-neg', 'u2pl-all-neg', 'u2pl-nocontrast',
              'cutmix-mt', 'supervised-full', 'supervised')


class Benchmark(NamedTuple):
    """One benchmark of the tool (``--benchmark``)."""
    methods: Dict[str, str]
    fractions: Tuple[str, ...]
    seeds: Tuple[int, ...]
    #: paired differences reported, ``(a, b)``: mIoU(a) - mIoU(b) per seed
    pairs: Tuple[Tuple[str, str], ...]
    #: the ``±`` of the table: ``'std'`` over seeds or standard ``'se'``
    error: str
    title: str
    work_dir: str


BENCHMARKS = {
    'toy':
    Benchmark(METHODS, ('1-16', '1-8', '1-4'), (0, 1, 2),
              (('u2pl', 'u2pl-nocontrast'), ), 'std', 'toy dataset',
              'work_dirs/label_efficiency'),
    'toy21':
    Benchmark(TOY21_METHODS, ('1-16', ), (0, 1, 2, 3, 4, 5),
              (('u2pl', 'u2pl-nocontrast'), ('u2pl', 'u2pl-reliable-neg'),
               ('u2pl', 'u2pl-all-neg'), ('u2pl-nocontrast', 'cutmix-mt'),
               ('u2pl', 'cutmix-mt'), ('cutmix-mt', 'supervised')), 'se',
              'ToyShapes21', 'work_dirs/label_efficiency_toy21'),
}


class RunSpec(NamedTuple):
    """One training of the benchmark."""
    method: str
    fraction: str
    seed: int

    @property
    def name(self) -> str:
        return f'{self.method}_{self.fraction}_seed{self.seed}'


# ---------------------------------------------------------------------------
# fractions and the plan
# ---------------------------------------------------------------------------
def parse_fraction(fraction: str) -> Fraction:
    """The share of a split name: ``'1-16'`` -> 1/16; ``'1'``, ``'full'`` -> 1.

    The value is read by ``split_utils.parse_fraction``; a name with ``/``
    names no split file.

    Raises:
        ValueError: For a name that is not a share in (0, 1] as the split
            lists are named.
    """
    if fraction == FULL:
        return Fraction(1)
    if '/' in fraction:
        raise ValueError(
            f'labeled fraction {fraction!r}: write it as the split lists '
            'are named, e.g. 1-16, 1-8, 1-4 (splits/labeled_1-16.txt).')
    return parse_share(fraction)


def fraction_label(fraction: str) -> str:
    """Human form of a fraction: ``'1-16'`` -> ``'1/16'``, full -> ``all``."""
    return 'all' if fraction == FULL else fraction.replace('-', '/')


def plan_runs(methods: Sequence[str],
              fractions: Sequence[str],
              seeds: Sequence[int],
              available: Optional[Dict[str, str]] = None) -> List[RunSpec]:
    """Every training the benchmark needs: seed by seed (an interrupted
    benchmark leaves whole seeds, which pair), longest first within one.

    ``supervised-full`` is trained once per seed (fraction ``full``); the
    other methods once per fraction and seed. ``available`` are the
    benchmark's methods (default: the toy's :data:`METHODS`).
    """
    available = METHODS if available is None else available
    unknown = sorted(set(methods) - set(available))
    if unknown:
        raise ValueError(f'unknown method(s) {unknown}; choose from '
                         f'{list(available)}')
    for fraction in fractions:
        parse_fraction(fraction)
    runs = []
    for seed in seeds:
        for method in methods:
            if method == UPPER:
                runs.append(RunSpec(method, FULL, seed))
            else:
                runs += [RunSpec(method, f, seed) for f in fractions]
    return sorted(runs, key=lambda r: (r.seed, COST_ORDER.index(r.method)))


# ---------------------------------------------------------------------------
# the commands
# ---------------------------------------------------------------------------
def config_settings(config: str) -> dict:
    """What the benchmark reads from a config (nothing is assumed).

    Returns:
        dict: ``max_iters``; ``schedulers``, the indices of the
        ``param_scheduler`` entries that end with the training; ``hook``,
        the index of the ``MeanTeacherHook`` in ``custom_hooks`` (None for a
        supervised config) and its ``warmup_iters``; ``semi``, whether the
        train dataset is a labeled/unlabeled pair; ``data_root``.
    """
    from mmengine.config import Config
    path = osp.join(ROOT, config)
    if not osp.isfile(path):
        raise FileNotFoundError(f'config {path} does not exist: check '
                                'METHODS in tools/analysis/label_efficiency'
                                '.py against the configs/ folder.')
    cfg = Config.fromfile(path, import_custom_modules=False)
    max_iters = cfg.train_cfg.get('max_iters')
    if not max_iters:
        raise KeyError(f'{path}: train_cfg.max_iters is missing; the '
                       'benchmark needs an iteration-based config.')
    schedulers = cfg.get('param_scheduler') or []
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    ending = [i for i, s in enumerate(schedulers) if s.get('end') == max_iters]
    hook, warmup = None, None
    for i, h in enumerate(cfg.get('custom_hooks') or []):
        if h.get('type') == 'MeanTeacherHook':
            hook, warmup = i, h.get('warmup_iters')
            if warmup is None:
                raise KeyError(f'{path}: custom_hooks.{i} (MeanTeacherHook) '
                               'has no warmup_iters; give --warmup.')
    dataset = cfg.train_dataloader.dataset
    semi = 'labeled' in dataset
    data_root = (dataset.labeled if semi else dataset).get('data_root')
    return dict(
        max_iters=int(max_iters),
        schedulers=ending,
        hook=hook,
        warmup_iters=warmup,
        semi=semi,
        data_root=data_root)


def schedule(settings: dict, iters: Optional[int],
             warmup: Optional[int]) -> Tuple[int, int]:
    """Iterations and warm-up of the runs.

    Defaults are the config's; a changed ``iters`` scales the config's
    warm-up by the same factor unless ``warmup`` is given.
    """
    total = iters or settings['max_iters']
    if warmup is None:
        base = settings['warmup_iters'] or 0
        warmup = round(base * total / settings['max_iters'])
    if not 0 <= warmup < total:
        raise ValueError(f'--warmup {warmup} must lie in [0, --iters '
                         f'{total})')
    return total, warmup


def split_options(spec: RunSpec, semi: bool) -> List[str]:
    """``--cfg-options`` that select the labeled fraction of a run."""
    if spec.fraction == FULL:
        return []
    labeled = SPLIT_FILE.format(kind='labeled', fraction=spec.fraction)
    if not semi:
        return [f'train_dataloader.dataset.ann_file={labeled}']
    unlabeled = SPLIT_FILE.format(kind='unlabeled', fraction=spec.fraction)
    return [
        f'train_dataloader.dataset.labeled.ann_file={labeled}',
        f'train_dataloader.dataset.unlabeled.ann_file={unlabeled}'
    ]


def train_command(spec: RunSpec,
                  settings: dict,
                  run_dir: str,
                  iters: int,
                  warmup: int,
                  num_workers: int,
                  data_root: Optional[str],
                  methods: Optional[Dict[str, str]] = None,
                  extra_options: Sequence[str] = ()) -> List[str]:
    """The ``tools/train.py`` command line of one run.

    Its config comes from ``methods`` (default the toy's :data:`METHODS`);
    ``extra_options`` (``--cfg-options`` of the benchmark) come last, so
    that they apply to every run on top of the benchmark's own.
    """
    methods = METHODS if methods is None else methods
    options = [
        f'randomness.seed={spec.seed}', f'train_cfg.max_iters={iters}',
        f'train_cfg.val_interval={iters}',
        f'default_hooks.checkpoint.interval={iters}'
    ]
    options += [
        f'param_scheduler.{i}.end={iters}' for i in settings['schedulers']
    ]
    if settings['hook'] is not None:
        options.append(f'custom_hooks.{settings["hook"]}.warmup_iters='
                       f'{warmup}')
    persistent = num_workers > 0
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options += [
            f'{loader}.num_workers={num_workers}',
            f'{loader}.persistent_workers={persistent}'
        ]
    if data_root:
        branches = ('labeled.', 'unlabeled.') if settings['semi'] else ('', )
        options += [
            f'train_dataloader.dataset.{b}data_root={data_root}'
            for b in branches
        ]
        options += [
            f'{loader}.dataset.data_root={data_root}'
            for loader in ('val_dataloader', 'test_dataloader')
        ]
    options += split_options(spec, settings['semi'])
    options += list(extra_options)
    return [
        sys.executable,
        osp.join(ROOT, 'tools', 'train.py'),
        osp.join(ROOT, methods[spec.method]), '--work-dir', run_dir,
        '--cfg-options'
    ] + options


def check_splits(runs: Sequence[RunSpec], settings: Dict[str, dict],
                 data_root: Optional[str]) -> None:
    """Fail early, naming the file, when a split list is missing."""
    for spec in runs:
        if spec.fraction == FULL:
            continue
        root = data_root or settings[spec.method]['data_root']
        root = root if osp.isabs(root) else osp.join(ROOT, root)
        kinds = ('labeled', 'unlabeled') \
            if settings[spec.method]['semi'] else ('labeled', )
        for kind in kinds:
            path = osp.join(
                root, SPLIT_FILE.format(kind=kind, fraction=spec.fraction))
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f'split list {path} does not exist: generate the '
                    'dataset with '
                    'tools/dataset_converters/make_toy_dataset.py (--dataset '
                    'toy21 for ToyShapes21) or choose fractions that exist '
                    '(--fractions).')


# ---------------------------------------------------------------------------
# results on disk
# ---------------------------------------------------------------------------
def read_scalars(run_dir: str) -> List[dict]:
    """Records of the newest ``<timestamp>/vis_data/scalars.json``."""
    if not osp.isdir(run_dir):
        return []
    stamps = sorted(
        d for d in os.listdir(run_dir)
        if osp.isfile(osp.join(run_dir, d, 'vis_data', 'scalars.json')))
    if not stamps:
        return []
    with open(osp.join(run_dir, stamps[-1], 'vis_data', 'scalars.json')) as f:
        return [json.loads(line) for line in f if line.strip()]


def final_metrics(run_dir: str, iters: int) -> dict:
    """mIoU of the last validation and the median seconds per iteration.

    The teacher's mIoU when the run validated a teacher, else ``mIoU``.

    Raises:
        RuntimeError: When no validation at iteration ``iters`` was logged.
    """
    records = read_scalars(run_dir)
    val = [r for r in records if 'teacher/mIoU' in r or 'mIoU' in r]
    final = [r for r in val if r.get('step') == iters]
    if not final:
        raise RuntimeError(
            f'{run_dir}: no validation mIoU at iteration {iters} in '
            'vis_data/scalars.json; see the run\'s log and rerun with '
            '--force.')
    record = final[-1]
    times = [r['time'] for r in records if 'iter' in r and 'time' in r]
    return dict(
        miou=record.get('teacher/mIoU', record.get('mIoU')),
        student_miou=record.get('student/mIoU'),
        sec_per_iter=statistics.median(times) if times else None)


def load_result(run_dir: str, iters: int, warmup: int) -> Optional[dict]:
    """The stored result of a finished run, or None when there is none.

    Raises:
        ValueError: When it was trained with another schedule (reusing it
            would mix schedules in one table).
    """
    path = osp.join(run_dir, RESULT_FILE)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        result = json.load(f)
    if (result.get('iters'), result.get('warmup')) != (iters, warmup):
        raise ValueError(
            f'{path} was trained with iters={result.get("iters")}, '
            f'warmup={result.get("warmup")}, not iters={iters}, '
            f'warmup={warmup}: pass --force to train it again or use '
            'another --work-dir.')
    return result


def run_training(command: List[str], run_dir: str) -> float:
    """Run a ``tools/train.py`` command line with one thread per process,
    its output in ``<run_dir>/train.log``.

    Returns:
        float: Wall seconds.

    Raises:
        RuntimeError: When the training exits with an error.
    """
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    log_path = osp.join(run_dir, 'train.log')
    start = time.time()
    with open(log_path, 'w') as log:
        proc = subprocess.run(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f'training failed (exit code {proc.returncode});'
                           f' see {log_path}')
    return time.time() - start


def train_one(spec: RunSpec, command: List[str], run_dir: str, iters: int,
              warmup: int, config: str) -> dict:
    """Train one run from scratch and store its result."""
    if osp.isdir(run_dir):  # interrupted or forced: start clean
        shutil.rmtree(run_dir)
    os.makedirs(run_dir)
    wall = run_training(command, run_dir)
    result = dict(
        method=spec.method,
        fraction=spec.fraction,
        seed=spec.seed,
        iters=iters,
        warmup=warmup,
        wall_s=wall,
        config=config,
        **final_metrics(run_dir, iters))
    with open(osp.join(run_dir, RESULT_FILE), 'w') as f:
        json.dump(result, f, indent=2)
    return result


# ---------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------
def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.mean(values), std


def gap_closed(value: float, lower: float, upper: float) -> Optional[float]:
    """Share of the gap ``upper - lower`` that ``value`` closes (None when
    there is no gap)."""
    if upper - lower <= 0:
        return None
    return (value - lower) / (upper - lower)


def summarize(results: Sequence[dict], methods: Sequence[str],
              fractions: Sequence[str]) -> List[dict]:
    """Table rows: one per fraction and method, then the upper bound.

    Each row has ``method``, ``fraction``, ``seeds``, ``miou`` and
    ``miou_std`` (None without results), the mean ``wall_s``; U2PL rows add
    ``gap_closed`` (from the means) and ``gap_closed_std`` (over the seeds
    with all three of (a), the row and (d)).
    """
    by_key: Dict[Tuple[str, str], Dict[int, dict]] = {}
    for r in results:
        by_key.setdefault((r['method'], r['fraction']), {})[r['seed']] = r

    def row(method, fraction):
        runs = by_key.get((method, fraction), {})
        out = dict(method=method, fraction=fraction, seeds=sorted(runs))
        if runs:
            out['miou'], out['miou_std'] = mean_std(
                [r['miou'] for r in runs.values()])
            out['wall_s'] = statistics.mean(r['wall_s'] for r in runs.values())
        else:
            out['miou'] = out['miou_std'] = out['wall_s'] = None
        return out, runs

    upper_row, upper_runs = row(UPPER, FULL)
    rows = []
    for fraction in fractions:
        lower_row, lower_runs = row(LOWER, fraction)
        for method in methods:
            if method == UPPER:
                continue
            out, runs = (lower_row, lower_runs) if method == LOWER \
                else row(method, fraction)
            if method in SEMI_METHODS:
                out['gap_closed'] = out['gap_closed_std'] = None
                if None not in (out['miou'], lower_row['miou'],
                                upper_row['miou']):
                    out['gap_closed'] = gap_closed(out['miou'],
                                                   lower_row['miou'],
                                                   upper_row['miou'])
                paired = [
                    gap_closed(runs[s]['miou'], lower_runs[s]['miou'],
                               upper_runs[s]['miou']) for s in runs
                    if s in lower_runs and s in upper_runs
                ]
                paired = [p for p in paired if p is not None]
                if len(paired) > 1:
                    out['gap_closed_std'] = statistics.stdev(paired)
            rows.append(out)
    if UPPER in methods:
        rows.append(upper_row)
    return rows


def paired_differences(results: Sequence[dict], pairs: Sequence[Tuple[str,
                                                                      str]],
                       fractions: Sequence[str]) -> List[dict]:
    """Seed-paired differences ``mIoU(a) - mIoU(b)``, per fraction.

    Runs of the same seed share the data order, augmentation and
    initialisation, so the per-seed difference removes what the seed
    decides for both.

    Returns:
        list[dict]: One row per fraction and pair with ``a``, ``b``,
        ``fraction``, ``seeds`` (those with both runs), ``mean``, ``std``
        (sample standard deviation of the differences, None below two
        seeds) and ``se`` (``std / sqrt(n)``).
    """
    by_key: Dict[Tuple[str, str], Dict[int, float]] = {}
    for r in results:
        by_key.setdefault((r['method'], r['fraction']),
                          {})[r['seed']] = r['miou']
    rows = []
    for fraction in fractions:
        for a, b in pairs:
            runs_a = by_key.get((a, FULL if a == UPPER else fraction), {})
            runs_b = by_key.get((b, FULL if b == UPPER else fraction), {})
            seeds = sorted(set(runs_a) & set(runs_b))
            diffs = [runs_a[s] - runs_b[s] for s in seeds]
            row = dict(
                a=a,
                b=b,
                fraction=fraction,
                seeds=seeds,
                mean=None,
                std=None,
                se=None)
            if diffs:
                row['mean'] = statistics.mean(diffs)
            if len(diffs) > 1:
                row['std'] = statistics.stdev(diffs)
                row['se'] = row['std'] / len(diffs)**0.5
            rows.append(row)
    return rows


def format_paired_markdown(rows: Sequence[dict]) -> str:
    """The Markdown table of :func:`paired_differences`'s rows."""
    lines = [
        '| labeled | difference | mIoU points (mean ± s.e.) | seeds |',
        '|---|---|---|---|'
    ]
    for r in rows:
        if r['mean'] is None:
            value = 'missing'
        elif r['se'] is None:
            value = f'{r["mean"]:+.2f}'
        else:
            value = f'{r["mean"]:+.2f} ± {r["se"]:.2f}'
        lines.append(f'| {fraction_label(r["fraction"])} | {r["a"]} - '
                     f'{r["b"]} | {value} | {len(r["seeds"])} |')
    return '\n'.join(lines)


def _fmt_value(mean: Optional[float],
               std: Optional[float],
               n: int,
               scale: float = 1.0,
               unit: str = '',
               error: str = 'std') -> str:
    if mean is None:
        return 'missing'
    if n > 1 and std is not None:
        spread = std / n**0.5 if error == 'se' else std
        return f'{scale * mean:.1f} ± {scale * spread:.1f}{unit}'
    return f'{scale * mean:.1f}{unit}'


def format_markdown(rows: Sequence[dict], error: str = 'std') -> str:
    """The Markdown table of :func:`summarize`'s rows.

    ``error``: the ``±`` is the sample standard deviation over seeds
    (``'std'``) or the standard error of the mean (``'se'``).
    """
    if error not in ('std', 'se'):
        raise ValueError(f"error must be 'std' or 'se', got {error!r}")
    mean = 'mean ± s.e.' if error == 'se' else 'mean ± std'
    header = ('| labeled | method | mIoU (%, teacher for U2PL) | seeds | '
              'gap closed | wall time / run |')
    if error == 'se':
        header = header.replace('teacher for U2PL',
                                'teacher for U2PL, ' + mean).replace(
                                    'gap closed', 'gap closed (' + mean + ')')
    lines = [header, '|---|---|---|---|---|---|']
    for r in rows:
        n = len(r['seeds'])
        closed = ''
        if 'gap_closed' in r:
            closed = 'n/a' if r['gap_closed'] is None else _fmt_value(
                r['gap_closed'], r['gap_closed_std'], n, 100, ' %', error)
        wall = '' if r['wall_s'] is None else f'{r["wall_s"] / 60:.1f} min'
        lines.append(f'| {fraction_label(r["fraction"])} | {r["method"]} | '
                     f'{_fmt_value(r["miou"], r["miou_std"], n, error=error)}'
                     f' | {n} | {closed} | {wall} |')
    return '\n'.join(lines)


def plot(rows: Sequence[dict],
         path: str,
         title: str = 'toy dataset',
         error: str = 'std') -> None:
    """mIoU against the labeled fraction, one line per method (PNG).

    Error bars are the standard deviation over seeds (``error='se'``: the
    standard error); the upper bound is a dashed horizontal line with its
    spread shaded. With a single fraction the methods are bars instead.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    def spread(r):
        std, n = r['miou_std'] or 0., max(1, len(r['seeds']))
        return std / n**0.5 if error == 'se' else std

    fig, ax = plt.subplots(figsize=(6, 4))
    scarce = [
        r for r in rows if r['method'] != UPPER and r['miou'] is not None
    ]
    single = len({r['fraction'] for r in scarce}) == 1
    fractions = []
    for index, method in enumerate((LOWER, ) + SEMI_METHODS):
        points = [(float(parse_fraction(r['fraction'])), r['miou'], spread(r))
                  for r in scarce if r['method'] == method]
        if not points:
            continue
        points.sort()
        fractions += [p[0] for p in points]
        x, y, err = zip(*points)
        if single:
            ax.bar([index], y, yerr=err, capsize=3, label=method)
        else:
            ax.errorbar(x, y, yerr=err, marker='o', capsize=3, label=method)
    for r in rows:
        if r['method'] == UPPER and r['miou'] is not None:
            ax.axhline(
                r['miou'],
                color='black',
                linestyle='--',
                label=f'{UPPER} (all labels)')
            if r['miou_std']:
                ax.axhspan(
                    r['miou'] - spread(r),
                    r['miou'] + spread(r),
                    color='black',
                    alpha=0.1)
    ticks = sorted(set(fractions))
    if single:
        ax.set_xticks([])
        ax.set_xlabel(
            f'labeled fraction {fraction_label(scarce[0]["fraction"])}')
        low = min(r['miou'] - spread(r) for r in rows if r['miou'] is not None)
        ax.set_ylim(bottom=max(0., low - 5.))
    elif ticks:
        ax.set_xscale('log', base=2)
        ax.set_xticks(ticks)
        ax.set_xticklabels(
            [str(Fraction(t).limit_denominator()) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel('labeled fraction')
    ax.set_ylabel('mIoU (%)')
    ax.set_title(f'Label efficiency ({title})')
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize='small')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(work_dir: str,
                  rows: Sequence[dict],
                  results: Sequence[dict],
                  settings: dict,
                  paired: Sequence[dict] = (),
                  benchmark: Optional[Benchmark] = None) -> str:
    """Write ``label_efficiency.{md,json,png}``; return the Markdown (the
    table, then the paired differences when there are any)."""
    benchmark = benchmark or BENCHMARKS['toy']
    table = format_markdown(rows, benchmark.error)
    if paired:
        table += '\n\n' + format_paired_markdown(paired)
    base = osp.join(work_dir, 'label_efficiency')
    with open(base + '.md', 'w') as f:
        f.write(table + '\n')
    with open(base + '.json', 'w') as f:
        json.dump(
            dict(
                settings=settings,
                rows=list(rows),
                paired_differences=list(paired),
                runs=list(results)),
            f,
            indent=2)
    plot(rows, base + '.png', benchmark.title, benchmark.error)
    return table


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------
#: dataloader workers per run: the toy configs' own. The worker count
#: decides which worker draws each sample's augmentation, hence the result:
#: a constant keeps runs comparable across machines and with the README's
#: main job.
DEFAULT_NUM_WORKERS = 2


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--benchmark',
        choices=list(BENCHMARKS),
        default='toy',
        help='toy: the 6-class toy at 3 fractions; toy21: ToyShapes21, 7 '
        'methods at 1/16 over 6 seeds (default: %(default)s)')
    parser.add_argument(
        '--fractions',
        nargs='+',
        default=None,
        help='labeled fractions (default: toy 1-16 1-8 1-4, toy21 1-16)')
    parser.add_argument(
        '--methods',
        nargs='+',
        choices=sorted(set(METHODS) | set(TOY21_METHODS)),
        default=None,
        help="the benchmark's methods (default: all of them)")
    parser.add_argument(
        '--seeds',
        nargs='+',
        type=int,
        default=None,
        help='seeds (default: toy 0 1 2, toy21 0-5)')
    parser.add_argument(
        '--iters',
        type=int,
        default=None,
        help='training iterations (default: train_cfg.max_iters)')
    parser.add_argument(
        '--warmup',
        type=int,
        default=None,
        help='supervised warm-up of the U2PL runs (default: the '
        'MeanTeacherHook\'s, scaled with --iters)')
    parser.add_argument('--jobs', type=int, default=1)
    parser.add_argument(
        '--num-workers',
        type=int,
        default=DEFAULT_NUM_WORKERS,
        help='dataloader workers per run (default: %(default)s, the toy '
        "configs' own; the worker count changes the augmentation stream, "
        'hence the results)')
    parser.add_argument(
        '--data-root', help='toy dataset folder (default: the configs\')')
    parser.add_argument(
        '--work-dir',
        default=None,
        help='default: work_dirs/label_efficiency (toy), '
        'work_dirs/label_efficiency_toy21 (toy21)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        metavar='KEY=VALUE',
        help='config options for every run, after the benchmark\'s own, '
        'e.g. model.semi_train_cfg.reuse_teacher_forward=False (finished '
        'runs are reused per --work-dir: use one work dir per setting)')
    parser.add_argument(
        '--force',
        action='store_true',
        help='train again the runs that have a result')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='1/16 only, seed 0, 2 jobs (toy: about 10 min on 2 free cores)')
    args = parser.parse_args(argv)
    benchmark = BENCHMARKS[args.benchmark]
    args.fractions = args.fractions or list(benchmark.fractions)
    args.methods = args.methods or list(benchmark.methods)
    args.seeds = args.seeds if args.seeds is not None else list(
        benchmark.seeds)
    args.work_dir = args.work_dir or benchmark.work_dir
    if args.quick:
        args.fractions, args.seeds = ['1-16'], [0]
        args.jobs = max(args.jobs, 2)
    if args.jobs < 1:
        parser.error(f'--jobs must be at least 1, got {args.jobs}')
    return args


def main(argv: Optional[List[str]] = None) -> List[dict]:
    args = parse_args(argv)
    work_dir = osp.abspath(args.work_dir)
    if args.data_root:  # the trainings run from the repository root
        args.data_root = osp.abspath(args.data_root)
    os.makedirs(work_dir, exist_ok=True)
    benchmark = BENCHMARKS[args.benchmark]
    methods = benchmark.methods
    runs = plan_runs(args.methods, args.fractions, args.seeds, methods)
    settings = {m: config_settings(methods[m]) for m in args.methods}
    check_splits(runs, settings, args.data_root)
    schedules = {
        m: schedule(s, args.iters, args.warmup)
        for m, s in settings.items()
    }
    num_workers = args.num_workers

    results, todo = [], []
    for spec in runs:
        iters, warmup = schedules[spec.method]
        run_dir = osp.join(work_dir, spec.name)
        done = None if args.force else load_result(run_dir, iters, warmup)
        if done is not None:
            print(
                f'[label_efficiency] {spec.name}: reusing mIoU '
                f'{done["miou"]:.2f} ({run_dir})',
                flush=True)
            results.append(done)
        else:
            todo.append(spec)
    print(
        f'[label_efficiency] {len(todo)} run(s) to train, '
        f'{len(results)} reused; {args.jobs} at a time, {num_workers} '
        'dataloader worker(s) each',
        flush=True)

    start, failures = time.time(), []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {}
        for spec in todo:
            iters, warmup = schedules[spec.method]
            run_dir = osp.join(work_dir, spec.name)
            command = train_command(spec, settings[spec.method], run_dir,
                                    iters, warmup, num_workers, args.data_root,
                                    methods, args.cfg_options)
            futures[pool.submit(train_one, spec, command, run_dir, iters,
                                warmup, methods[spec.method])] = spec
        for future in as_completed(futures):
            spec = futures[future]
            try:
                result = future.result()
            except Exception as error:  # report, keep the other runs going
                failures.append(f'{spec.name}: {error}')
                print(f'[label_efficiency] FAILED {failures[-1]}', flush=True)
                continue
            results.append(result)
            print(
                f'[label_efficiency] {spec.name}: mIoU '
                f'{result["miou"]:.2f} in {result["wall_s"] / 60:.1f} min',
                flush=True)
    elapsed = time.time() - start

    rows = summarize(results, args.methods, args.fractions)
    pairs = [(a, b) for a, b in benchmark.pairs
             if a in args.methods and b in args.methods]
    paired = paired_differences(results, pairs, args.fractions)
    table = write_outputs(
        work_dir, rows, results,
        dict(
            benchmark=args.benchmark,
            fractions=args.fractions,
            methods=args.methods,
            seeds=args.seeds,
            schedules={
                m: dict(iters=i, warmup=w)
                for m, (i, w) in schedules.items()
            },
            jobs=args.jobs,
            wall_s=elapsed), paired, benchmark)
    print('\n' + table + '\n')
    print('| run | mIoU | wall time | s / iter |\n|---|---|---|---|')
    for r in sorted(
            results, key=lambda r: (r['method'], r['fraction'], r['seed'])):
        per_iter = r.get('sec_per_iter')
        print(f'| {RunSpec(r["method"], r["fraction"], r["seed"]).name} | '
              f'{r["miou"]:.2f} | {r["wall_s"] / 60:.1f} min | '
              f'{"-" if per_iter is None else f"{per_iter:.3f}"} |')
    print(f'\n[label_efficiency] {len(todo) - len(failures)} run(s) trained '
          f'in {elapsed / 60:.1f} min wall time (sum over all runs in the '
          f'table: {sum(r["wall_s"] for r in results) / 60:.1f} min); '
          f'wrote {osp.join(work_dir, "label_efficiency")}.md/.json/.png')
    if failures:
        raise SystemExit('label_efficiency: failed runs:\n  ' +
                         '\n  '.join(failures))
    return rows


if __name__ == '__main__':
    main()
