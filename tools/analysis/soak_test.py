# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Soak test: a long U2PL training that watches memory and the memory bank.

It trains a U2PL config (default: the toy one) in this process with an
mmengine ``Runner`` set up as ``tools/train.py`` sets it up, plus a
:class:`SoakMonitorHook` that every ``--interval`` iterations records

* the resident set size (RSS) of the process, and
* the fill of the contrastive loss's memory bank (a
  :class:`~mmseg_u2pl.models.losses.memory_bank.CategoryMemoryBank`): rows
  filled per class, write pointers and the size of its feature buffer.

At the end it prints a table and a verdict, and writes ``soak.md`` and
``soak.json`` to the work dir:

* **memory bank**: no class ever holds more rows than its capacity, the
  write pointers stay inside their queues and the feature buffer keeps its
  size;
* **RSS**: the robust (Theil-Sen) slope of RSS against the iteration, in
  MiB per 1000 iterations, over the samples taken once every class's queue
  is full and after ``--settle`` of the run; flat when below
  ``--max-growth``. mmengine's MessageHub keeps every logged scalar (up to
  a million per key), which adds a little by design: its share is reported.

The exit code is 1 when a check fails. Validation is off unless
``--val-interval`` is given; ``--bank-size`` shrinks the bank so that it
fills quickly. Dataloader workers default to 0 so that all the memory is in
the measured process. Not part of CI: the test suite runs it for a few
iterations only.

Examples::

    OMP_NUM_THREADS=1 python tools/analysis/soak_test.py --iters 20000 \\
        --bank-size 2000 --interval 200
    python tools/analysis/soak_test.py --iters 300 --bank-size 64 \\
        --warmup 20 --interval 10 --work-dir work_dirs/soak_short
"""
import argparse
import gc
import json
import os
import os.path as osp
import statistics
import sys
import time
from typing import List, Optional, Sequence

if osp.dirname(osp.abspath(__file__)) not in sys.path:
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import (
    TOY_U2PL_CONFIG,
    current_rss_mib,
    markdown_table,  # noqa: E402
    resolve_config)
from mmengine.config import DictAction  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402


# ---------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------
def find_memory_bank(model):
    """The model's ``CategoryMemoryBank`` (wrappers are looked through).

    Raises:
        ValueError: When the model has none (no contrastive loss).
    """
    from mmseg_u2pl.models.losses.memory_bank import CategoryMemoryBank
    banks = [m for m in model.modules() if isinstance(m, CategoryMemoryBank)]
    if not banks:
        raise ValueError(
            'soak_test: the model has no CategoryMemoryBank; use a U2PL '
            'config with model.contrastive_loss (e.g. '
            f'{TOY_U2PL_CONFIG}).')
    return banks[0]


def bank_state(bank) -> dict:
    """Fill, capacity and write pointer per class, and the buffer rows."""
    return dict(
        fill=[int(v) for v in bank.fill.tolist()],
        capacity=[int(v) for v in bank.capacity.tolist()],
        ptr=[int(v) for v in bank.ptr.tolist()],
        rows=int(bank.features.shape[0]))


def log_history_mib(message_hub) -> float:
    """Memory of the scalar histories that mmengine's MessageHub keeps.

    Every logged scalar appends to a buffer of up to a million values, so
    this grows with the iterations by design.
    """
    total = 0
    for buffer in message_hub.log_scalars.values():
        total += sum(a.nbytes for a in buffer.data)
    return total / 2**20


def live_objects() -> int:
    """Python objects tracked by the garbage collector, after a collection
    (so that uncollected cycles, e.g. of a checkpoint save, do not count)."""
    gc.collect()
    return len(gc.get_objects())


class SoakMonitorHook(Hook):
    """Record RSS and memory-bank state every ``interval`` iterations.

    The first iteration and the last one are always recorded. Samples are
    kept in ``self.samples`` (not model state: the soak never resumes).

    Args:
        interval (int): Iterations between two samples.
    """

    priority = 'LOWEST'

    def __init__(self, interval: int) -> None:
        if interval < 1:
            raise ValueError(f'--interval must be at least 1, got {interval}')
        self.interval = interval
        self.samples: List[dict] = []
        self._bank = None
        self._start = None

    def before_train(self, runner) -> None:
        self._bank = find_memory_bank(runner.model)
        self._start = time.time()

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        it = runner.iter + 1
        if it == 1 or it % self.interval == 0 or it == runner.max_iters:
            self.samples.append(
                dict(
                    iter=it,
                    rss_mib=current_rss_mib(),
                    log_mib=log_history_mib(runner.message_hub),
                    py_objects=live_objects(),
                    elapsed_s=time.time() - self._start,
                    **bank_state(self._bank)))


# ---------------------------------------------------------------------------
# the verdict (pure functions of the samples)
# ---------------------------------------------------------------------------
def capacity_violations(samples: Sequence[dict]) -> List[str]:
    """Every sample where the bank broke its bounds, described."""
    problems = []
    rows = samples[0]['rows'] if samples else None
    for s in samples:
        for cls, (fill, cap,
                  ptr) in enumerate(zip(s['fill'], s['capacity'], s['ptr'])):
            if not 0 <= fill <= cap:
                problems.append(f'iter {s["iter"]}: class {cls} holds {fill} '
                                f'rows, capacity {cap}')
            if not 0 <= ptr < cap:
                problems.append(f'iter {s["iter"]}: class {cls} write '
                                f'pointer {ptr} outside [0, {cap})')
        if s['rows'] != sum(s['capacity']) or s['rows'] != rows:
            problems.append(f'iter {s["iter"]}: feature buffer has '
                            f'{s["rows"]} rows, expected '
                            f'{sum(s["capacity"])}')
    return problems


def first_full_iter(samples: Sequence[dict]) -> Optional[int]:
    """The first sampled iteration at which every class's queue is full."""
    for s in samples:
        if all(f >= c for f, c in zip(s['fill'], s['capacity'])):
            return s['iter']
    return None


def robust_slope(xs: Sequence[float],
                 ys: Sequence[float],
                 max_points: int = 300) -> Optional[float]:
    """Theil-Sen slope: the median of the slopes of all pairs of points.

    Unlike least squares it ignores the short RSS spikes of checkpoint
    saving or image logging. Long series are thinned evenly to
    ``max_points`` first. None with fewer than two distinct ``xs``.
    """
    points = list(zip(xs, ys))
    if len(points) > max_points:
        step = (len(points) - 1) / (max_points - 1)
        points = [points[round(i * step)] for i in range(max_points)]
    slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points)
              for x2, y2 in points[i + 1:] if x2 != x1]
    return statistics.median(slopes) if slopes else None


def growth_per_1000(samples: Sequence[dict], key: str) -> Optional[float]:
    """Robust growth of ``sample[key]`` per 1000 iterations."""
    slope = robust_slope([s['iter'] for s in samples],
                         [s[key] for s in samples])
    return None if slope is None else 1000 * slope


def verdict(samples: Sequence[dict],
            max_growth: float,
            settle: float = 0.2,
            min_samples: int = 4) -> dict:
    """Judge the samples.

    Args:
        samples (list[dict]): From :class:`SoakMonitorHook`.
        max_growth (float): Largest RSS slope (MiB per 1000 iterations)
            still called flat.
        settle (float): Fraction of the run left out of the RSS fit.
        min_samples (int): Fewest samples the fit needs.

    Returns:
        dict: ``capacity_ok`` and ``violations``; ``full_iter`` (None when
        the bank never filled); ``fit_from`` (first iteration of the fit),
        ``growth`` (MiB per 1000 iterations, None when too few samples),
        ``rss`` (``'flat'``, ``'growing'`` or ``'inconclusive'``); for the
        diagnosis ``log_growth`` (MiB of mmengine's log history) and
        ``objects_growth`` (Python objects) per 1000 iterations; ``ok``.
    """
    violations = capacity_violations(samples)
    full_iter = first_full_iter(samples)
    last = samples[-1]['iter'] if samples else 0
    fit_from = max(full_iter or 0, settle * last)
    fitted = [s for s in samples if s['iter'] >= fit_from]
    enough = len(fitted) >= min_samples
    growth = growth_per_1000(fitted, 'rss_mib') if enough else None
    if growth is None:
        rss = 'inconclusive'
    else:
        rss = 'flat' if growth < max_growth else 'growing'
    return dict(
        capacity_ok=not violations,
        violations=violations,
        full_iter=full_iter,
        fit_from=int(fit_from),
        fit_samples=len(fitted),
        growth=growth,
        log_growth=growth_per_1000(fitted, 'log_mib')
        if enough and all('log_mib' in s for s in fitted) else None,
        objects_growth=growth_per_1000(fitted, 'py_objects')
        if enough and all('py_objects' in s for s in fitted) else None,
        max_growth=max_growth,
        rss=rss,
        ok=not violations and rss != 'growing')


def samples_table(samples: Sequence[dict], max_rows: Optional[int] = None):
    """Markdown table of the samples (at most ``max_rows``, evenly spread;
    the first and the last are always in)."""
    chosen = list(samples)
    if max_rows and len(chosen) > max_rows:
        step = (len(chosen) - 1) / (max_rows - 1)
        chosen = [chosen[round(i * step)] for i in range(max_rows)]
    header = ('iter', 'RSS (MiB)', 'log history (MiB)', 'Python objects',
              'bank rows filled / capacity', 'fill per class', 'elapsed (min)')
    rows = [(s['iter'],
             f'{s["rss_mib"]:.1f}', f'{s.get("log_mib", float("nan")):.2f}',
             s.get('py_objects',
                   '-'), f'{sum(s["fill"])} / {sum(s["capacity"])}',
             ' '.join(str(f) for f in s['fill']), f'{s["elapsed_s"] / 60:.1f}')
            for s in chosen]
    return markdown_table(header, rows)


def verdict_text(v: dict) -> str:
    """The verdict as Markdown bullet points."""
    lines = []
    if v['capacity_ok']:
        lines.append('- memory bank: capacity respected at every sample '
                     '(fill <= capacity, pointers in range, buffer size '
                     'constant)')
    else:
        lines.append('- memory bank: CAPACITY VIOLATED: ' +
                     '; '.join(v['violations'][:5]))
    if v['full_iter'] is None:
        lines.append('- memory bank: not every class filled its queue')
    else:
        lines.append(f'- memory bank: every class full from iteration '
                     f'{v["full_iter"]}')
    if v['growth'] is None:
        lines.append(f'- RSS: inconclusive (only {v["fit_samples"]} '
                     f'samples from iteration {v["fit_from"]})')
    else:
        lines.append(
            f'- RSS: {v["growth"]:+.2f} MiB per 1000 iterations from '
            f'iteration {v["fit_from"]} ({v["fit_samples"]} samples): '
            f'{v["rss"]} (threshold {v["max_growth"]:g})')
        if v.get('log_growth') is not None:
            lines.append(
                f'- of which mmengine\'s log history (MessageHub, kept by '
                f'design): {v["log_growth"]:+.2f} MiB per 1000 iterations')
        if v.get('objects_growth') is not None:
            lines.append(f'- Python objects: {v["objects_growth"]:+.0f} per '
                         '1000 iterations')
    lines.append(f'- verdict: {"PASS" if v["ok"] else "FAIL"}')
    return '\n'.join(lines)


# ---------------------------------------------------------------------------
# the training
# ---------------------------------------------------------------------------
def soak_config(args: argparse.Namespace):
    """The config of the soak: the chosen one with the soak's overrides."""
    import mmseg_u2pl  # noqa: F401  (registers our modules)
    from mmengine.config import Config

    from mmseg_u2pl.utils.launch import prepare_launch
    path = resolve_config(args.config)
    cfg = Config.fromfile(path)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if 'contrastive_loss' not in cfg.model:
        raise ValueError(f'{path}: model.contrastive_loss is not set; the '
                         'soak test watches its memory bank: use a full '
                         f'U2PL config such as {TOY_U2PL_CONFIG}.')
    old_max = cfg.train_cfg.max_iters
    cfg.train_cfg.max_iters = args.iters
    for sched in cfg.get('param_scheduler') or []:
        if sched.get('end') == old_max:
            sched['end'] = args.iters
    if args.val_interval:
        cfg.train_cfg.val_interval = args.val_interval
    else:
        cfg.train_cfg.val_interval = args.iters + 1
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        cfg.default_hooks.checkpoint.pop('save_best', None)
    if args.bank_size is not None:
        cfg.model.contrastive_loss.memory_size = args.bank_size
    if args.warmup is not None:
        hooks = [
            h for h in cfg.get('custom_hooks') or []
            if h.get('type') == 'MeanTeacherHook'
        ]
        if not hooks:
            raise KeyError(f'{path}: no MeanTeacherHook in custom_hooks to '
                           'give --warmup to.')
        hooks[0]['warmup_iters'] = args.warmup
        hooks[0].pop('warmup_epochs', None)
    cfg.train_dataloader.num_workers = args.num_workers
    cfg.train_dataloader.persistent_workers = args.num_workers > 0
    cfg.work_dir = args.work_dir
    prepare_launch(cfg, 'none')
    return cfg


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=TOY_U2PL_CONFIG)
    parser.add_argument('--iters', type=int, default=20000)
    parser.add_argument(
        '--bank-size',
        type=int,
        default=None,
        help='memory bank rows per class (default: the config\'s)')
    parser.add_argument(
        '--warmup',
        type=int,
        default=None,
        help='supervised warm-up iterations (default: the config\'s)')
    parser.add_argument(
        '--interval', type=int, default=100, help='iterations per sample')
    parser.add_argument(
        '--val-interval',
        type=int,
        default=0,
        help='validate every N iterations (default 0: never)')
    parser.add_argument('--num-workers', type=int, default=0)
    parser.add_argument(
        '--max-growth',
        type=float,
        default=5.0,
        help='RSS slope (MiB per 1000 iterations) still called flat. The '
        'noise of a 2000-iteration toy run on a busy machine is about 1.5; '
        'one leaked toy feature map per iteration adds 64 or more')
    parser.add_argument(
        '--settle',
        type=float,
        default=0.2,
        help='fraction of the run left out of the RSS fit')
    parser.add_argument(
        '--print-rows', type=int, default=25, help='rows of the printed table')
    parser.add_argument('--work-dir', default='work_dirs/soak_test')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='config overrides, as in tools/train.py')
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error(f'--iters must be at least 1, got {args.iters}')
    return args


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    from mmengine.runner import Runner

    from mmseg_u2pl.utils.checkpoint import register_checkpoint_safe_globals
    register_checkpoint_safe_globals()
    cfg = soak_config(args)
    runner = Runner.from_cfg(cfg)
    monitor = SoakMonitorHook(args.interval)
    runner.register_hook(monitor)
    start = time.time()
    runner.train()
    wall = time.time() - start

    samples = monitor.samples
    result = verdict(samples, args.max_growth, args.settle)
    header = (f'soak test: {args.config}, {args.iters} iterations in '
              f'{wall / 60:.1f} min, bank capacity '
              f'{samples[0]["capacity"]} rows per class, a sample every '
              f'{args.interval} iterations')
    text = verdict_text(result)
    print('\n' + header + '\n\n' + samples_table(samples, args.print_rows) +
          '\n\n' + text)
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, 'soak.md'), 'w') as f:
        f.write(header + '\n\n' + samples_table(samples) + '\n\n' + text +
                '\n')
    with open(osp.join(args.work_dir, 'soak.json'), 'w') as f:
        json.dump(
            dict(
                config=args.config,
                iters=args.iters,
                wall_s=wall,
                verdict=result,
                samples=samples),
            f,
            indent=2)
    if not result['ok']:
        raise SystemExit(1)
    return result


if __name__ == '__main__':
    main()
