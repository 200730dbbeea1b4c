# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Label-efficiency benchmark on the embedded toy dataset.

For each labeled fraction it trains, with the same network, schedule and
seed: (a) supervised-only on the labeled part, (b) U2PL without the
contrastive term, (c) full U2PL, and (d) supervised on all labels (the upper
bound, once). It prints a Markdown table of the final mIoU (the teacher's for
U2PL) and, for each U2PL row, the share of the gap between (a) and (d) that it
closes; the table is also written to ``<work-dir>/label_efficiency.md``.

Each training is a ``tools/train.py`` subprocess, so what is measured is
exactly what a user runs. Runs whose work dir already holds a final result are
reused (delete the work dir to re-run).

Example::

    python tools/analysis/label_efficiency.py --fractions 1-16 --seeds 0
    python tools/analysis/label_efficiency.py --quick
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from statistics import mean, pstdev

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

METHODS = {
    'supervised':
    'configs/supervised/'
    'deeplabv3plus_r18-d8_1xb4-2k_toy-1-16-64x64.py',
    'u2pl-nocontrast':
    'configs/u2pl/'
    'u2pl-nocontrast_deeplabv3plus_r18-d8_1xb4+4-2k_toy-1-16-64x64.py',
    'u2pl':
    'configs/u2pl/'
    'u2pl_deeplabv3plus_r18-d8_1xb4+4-2k_toy-1-16-64x64.py',
}
FULL = 'full'


def split_options(method: str, fraction: str) -> list:
    """``--cfg-options`` that select the labeled fraction."""
    if fraction == FULL:
        return ['train_dataloader.dataset.ann_file=splits/train.txt']
    if method == 'supervised':
        return [
            f'train_dataloader.dataset.ann_file='
            f'splits/labeled_{fraction}.txt'
        ]
    return [
        f'train_dataloader.dataset.labeled.ann_file='
        f'splits/labeled_{fraction}.txt',
        f'train_dataloader.dataset.unlabeled.ann_file='
        f'splits/unlabeled_{fraction}.txt'
    ]


def final_miou(work_dir: str):
    """The last validation mIoU (teacher's when present) of a run."""
    best = None
    for root, _, files in os.walk(work_dir):
        if 'scalars.json' not in files:
            continue
        with open(osp.join(root, 'scalars.json')) as f:
            for line in f:
                record = json.loads(line)
                for key in ('teacher/mIoU', 'mIoU'):
                    if key in record:
                        best = (record.get('step', 0), record[key])
                        break
    return None if best is None else best[1]


def run(method: str, fraction: str, seed: int, args) -> float:
    work_dir = osp.join(args.work_dir, f'{method}_{fraction}_seed{seed}')
    result = final_miou(work_dir) if osp.isdir(work_dir) else None
    done = osp.exists(osp.join(work_dir, 'finished'))
    if result is not None and done:
        return result
    cmd = [
        sys.executable,
        osp.join(ROOT, 'tools/train.py'),
        osp.join(ROOT,
                 METHODS[method]), '--work-dir', work_dir, '--cfg-options',
        f'randomness.seed={seed}', f'train_cfg.max_iters={args.iters}',
        f'train_cfg.val_interval={args.iters}',
        f'param_scheduler.0.end={args.iters}',
        f'default_hooks.checkpoint.interval={args.iters}'
    ] + split_options(method, fraction)
    if method != 'supervised':
        cmd.append(f'custom_hooks.0.warmup_iters={args.warmup}')
    start = time.time()
    print(
        f'[label_efficiency] {method} {fraction} seed {seed}: training '
        f'({args.iters} iters) -> {work_dir}',
        flush=True)
    with open(
            osp.join(args.work_dir, f'{method}_{fraction}_seed{seed}.log'),
            'w') as log:
        proc = subprocess.run(
            cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f'training failed ({method} {fraction} seed '
                           f'{seed}); see {log.name}')
    result = final_miou(work_dir)
    open(osp.join(work_dir, 'finished'), 'w').close()
    print(
        f'[label_efficiency]   mIoU {result:.2f} in '
        f'{(time.time() - start) / 60:.1f} min',
        flush=True)
    return result


def fmt(values) -> str:
    if len(values) == 1:
        return f'{values[0]:.2f}'
    return f'{mean(values):.2f} ± {pstdev(values):.2f}'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--fractions', nargs='+', default=['1-16', '1-8', '1-4'])
    parser.add_argument(
        '--methods',
        nargs='+',
        default=['supervised', 'u2pl-nocontrast', 'u2pl'])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--iters', type=int, default=2000)
    parser.add_argument('--warmup', type=int, default=500)
    parser.add_argument('--work-dir', default='work_dirs/label_efficiency')
    parser.add_argument(
        '--quick', action='store_true', help='1/16 only, one seed')
    args = parser.parse_args()
    if args.quick:
        args.fractions, args.seeds = ['1-16'], [0]
    os.makedirs(args.work_dir, exist_ok=True)

    results = {}
    for seed in args.seeds:
        results.setdefault(('supervised', FULL),
                           []).append(run('supervised', FULL, seed, args))
        for fraction in args.fractions:
            for method in args.methods:
                results.setdefault(
                    (method, fraction),
                    []).append(run(method, fraction, seed, args))

    upper = mean(results[('supervised', FULL)])
    lines = ['| labeled | method | mIoU | gap closed |', '|---|---|---|---|']
    for fraction in args.fractions:
        lower = mean(results[('supervised', fraction)])
        for method in args.methods:
            values = results[(method, fraction)]
            share = (mean(values) - lower) / max(upper - lower, 1e-6)
            closed = '' if method == 'supervised' else f'{100 * share:.0f} %'
            lines.append(f'| {fraction.replace("-", "/")} | {method} | '
                         f'{fmt(values)} | {closed} |')
    lines.append(f'| all | supervised | {fmt(results[("supervised", FULL)])}'
                 ' | |')
    table = '\n'.join(lines)
    print(table)
    with open(osp.join(args.work_dir, 'label_efficiency.md'), 'w') as f:
        f.write(table + '\n')


if __name__ == '__main__':
    main()
