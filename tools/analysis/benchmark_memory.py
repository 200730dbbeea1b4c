# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Peak memory of one U2PL training iteration against the supervised one.

Every variant (see ``--variants``) runs in a fresh subprocess so that peaks
do not mix: the network, its optimizer wrapper and a synthetic batch of the
config's per-GPU size are built, the memory in use is read (``before``: the
weights, the teacher and the memory bank), the peak is reset, and
``--steps`` full training iterations (``model.train_step``: forward,
backward, optimizer step; the first one allocates gradients and optimizer
state) are run. ``peak`` is the most memory in use during them.

* CUDA: ``torch.cuda.max_memory_allocated`` (tensors) and
  ``max_memory_reserved`` (what the caching allocator took from the driver).
* CPU: the resident set size of the process (``VmHWM`` of
  ``/proc/self/status``, reset through ``/proc/self/clear_refs``; elsewhere
  ``getrusage``'s peak since start). It includes the interpreter and the
  libraries (``before``), so compare the ``peak - before`` column.
  ``tracemalloc`` does not see tensor memory and is not used.

Variants: ``supervised`` (the student alone on the ``B_l`` labeled images,
what a supervised run of this per-GPU batch costs), ``supervised-x2`` (the
student on ``B_l + B_u`` labeled images), ``u2pl-nocontrast`` and ``u2pl``.

Examples::

    # CPU, the toy config at its own size (64x64, 4 + 4 images)
    python tools/analysis/benchmark_memory.py
    # GPU, the paper's per-GPU sizes (crop and batch read from the configs)
    python tools/analysis/benchmark_memory.py --preset voc --amp both
    python tools/analysis/benchmark_memory.py --preset cityscapes --amp both
"""
import argparse
import copy
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Optional

import torch

if osp.dirname(osp.abspath(__file__)) not in sys.path:
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import (
    MIB,
    ROOT,
    VARIANTS,  # noqa: E402
    build_bench_optim_wrapper,
    build_variant,
    config_batch_and_crop,
    current_rss_mib,
    fake_batch,
    load_bench_config,
    markdown_table,
    peak_rss_mib,
    reset_peak_rss,
    CITYSCAPES_U2PL_CONFIG,
    TOY_U2PL_CONFIG,
    VOC_U2PL_CONFIG,
    resolve_config,
    resolve_device,
    set_train_progress,
    sync)
from mmengine.config import Config  # noqa: E402

#: The configs of ``--preset`` (per-GPU batch and crop are read from them).
PRESETS = {
    'toy': TOY_U2PL_CONFIG,
    'voc': VOC_U2PL_CONFIG,
    'cityscapes': CITYSCAPES_U2PL_CONFIG,
}
RESULT_PREFIX = 'BENCHMARK_MEMORY_RESULT '


# ---------------------------------------------------------------------------
# one variant (the subprocess)
# ---------------------------------------------------------------------------
def measure_variant(config: str, variant: str, batch: int, crop: int,
                    amp: bool, steps: int, device: torch.device) -> dict:
    """Build ``variant`` and measure ``steps`` training iterations.

    Run it in a process of its own: the CPU peak covers the whole process.

    Returns:
        dict: ``before_mib``, ``peak_mib`` (and ``reserved_mib`` on CUDA),
        ``images`` per iteration, ``seconds`` per iteration and how the peak
        was taken (``probe``).
    """
    if steps < 1:
        raise ValueError(f'--steps must be at least 1, got {steps}')
    cfg = load_bench_config(config, device, crop=crop)
    torch.manual_seed(0)
    model = build_variant(cfg, variant, device)
    set_train_progress(1, 100)
    wrapper = build_bench_optim_wrapper(cfg, model, device, amp)
    data = fake_batch(variant, cfg, batch, crop)
    batches = [copy.deepcopy(data) for _ in range(steps)]
    del data
    sync(device)
    result = dict(
        variant=variant,
        amp=amp,
        device=str(device),
        batch=batch,
        crop=crop,
        images=batch if variant == 'supervised' else 2 * batch)
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        result['before_mib'] = torch.cuda.memory_allocated(device) / MIB
        torch.cuda.reset_peak_memory_stats(device)
        result['probe'] = 'torch.cuda.max_memory_allocated'
    else:
        result['before_mib'] = current_rss_mib()
        result['probe'] = 'VmHWM' if reset_peak_rss() else 'ru_maxrss'
    start = time.perf_counter()
    for step_batch in batches:
        model.train_step(step_batch, wrapper)
    sync(device)
    result['seconds'] = (time.perf_counter() - start) / steps
    if device.type == 'cuda':
        result['peak_mib'] = torch.cuda.max_memory_allocated(device) / MIB
        result['reserved_mib'] = torch.cuda.max_memory_reserved(device) / MIB
    else:
        result['peak_mib'] = peak_rss_mib()
    return result


# ---------------------------------------------------------------------------
# the table (the parent process)
# ---------------------------------------------------------------------------
def format_table(results: List[dict]) -> str:
    """Markdown table of the measured variants.

    ``ratio`` compares ``peak - before`` (the memory the iteration itself
    takes) with the ``supervised`` variant of the same AMP setting.
    """
    sup = {
        r['amp']: r['peak_mib'] - r['before_mib']
        for r in results if r['variant'] == 'supervised'
    }
    cuda = any('reserved_mib' in r for r in results)
    header = ('variant', 'images / iter', 'AMP', 'before (MiB)', 'peak (MiB)',
              'peak - before (MiB)', 'ratio to supervised')
    if cuda:
        header += ('peak reserved (MiB)', )
    rows = []
    for r in results:
        increase = r['peak_mib'] - r['before_mib']
        ratio = f'{increase / sup[r["amp"]]:.2f}' \
            if sup.get(r['amp'], 0) > 0 else '-'
        row = [
            r['variant'], r['images'], 'on' if r['amp'] else 'off',
            f'{r["before_mib"]:.0f}', f'{r["peak_mib"]:.0f}',
            f'{increase:.0f}', ratio
        ]
        if cuda:
            row.append(f'{r.get("reserved_mib", float("nan")):.0f}')
        rows.append(row)
    return markdown_table(header, rows)


def run_worker(spec: dict, timeout: int) -> dict:
    """Measure one variant in a fresh Python process."""
    env = dict(os.environ)
    if spec['device'] == 'cpu':
        env.setdefault('OMP_NUM_THREADS', str(spec.get('threads') or 1))
    proc = subprocess.run(
        [sys.executable,
         osp.abspath(__file__), '--worker',
         json.dumps(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(
        f'benchmark_memory: the worker for variant {spec["variant"]!r} '
        f'(AMP {spec["amp"]}) failed with exit code {proc.returncode}:\n'
        f'{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--preset',
        choices=sorted(PRESETS),
        default='toy',
        help='config of the measurement (default: toy)')
    parser.add_argument(
        '--config', help='a U2PL config instead of the preset\'s')
    parser.add_argument(
        '--crop', type=int, help='square crop (default: the config\'s)')
    parser.add_argument(
        '--batch',
        type=int,
        help='labeled (= unlabeled) images per iteration (default: '
        'train_dataloader.batch_size of the config)')
    parser.add_argument(
        '--variants', nargs='+', choices=list(VARIANTS), default=None)
    parser.add_argument('--amp', choices=['off', 'on', 'both'], default='off')
    parser.add_argument(
        '--steps',
        type=int,
        default=2,
        help='training iterations measured (the first also allocates '
        'gradients and optimizer state)')
    parser.add_argument('--device', default=None)
    parser.add_argument(
        '--threads', type=int, default=1, help='torch threads on CPU')
    parser.add_argument(
        '--timeout', type=int, default=1800, help='seconds per variant')
    parser.add_argument('--out', help='also write the results as JSON here')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        if spec['device'] == 'cpu' and spec.get('threads'):
            torch.set_num_threads(spec['threads'])
        result = measure_variant(spec['config'], spec['variant'],
                                 spec['batch'], spec['crop'], spec['amp'],
                                 spec['steps'], torch.device(spec['device']))
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return result

    device = resolve_device(args.device)
    config = args.config or PRESETS[args.preset]
    # the sizes only: the workers build the networks
    cfg = Config.fromfile(resolve_config(config), import_custom_modules=False)
    cfg_batch, cfg_crop = config_batch_and_crop(cfg)
    batch, crop = args.batch or cfg_batch, args.crop or cfg_crop
    if batch < 2:
        raise ValueError(
            f'--batch {batch}: BatchNorm in training mode (e.g. the image '
            'pooling branch of ASPP) needs at least 2 images; use --batch 2 '
            'or more.')
    variants = args.variants or list(VARIANTS)
    amps = {'off': [False], 'on': [True], 'both': [False, True]}[args.amp]
    results = []
    for amp in amps:
        for variant in variants:
            spec = dict(
                config=config,
                variant=variant,
                batch=batch,
                crop=crop,
                amp=amp,
                steps=args.steps,
                device=str(device),
                threads=args.threads)
            results.append(run_worker(spec, args.timeout))
            print(
                f'[benchmark_memory] {variant} (AMP '
                f'{"on" if amp else "off"}): peak '
                f'{results[-1]["peak_mib"]:.0f} MiB',
                flush=True)
    table = format_table(results)
    name = torch.cuda.get_device_name(device) \
        if device.type == 'cuda' else 'CPU'
    print(f'\n{config}\ndevice: {device} ({name}), crop {crop}, {batch} '
          f'labeled + {batch} unlabeled images, {args.steps} training '
          f'iterations, peak from {results[0]["probe"]}\n')
    print(table)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(dict(config=config, results=results), f, indent=2)
    return dict(results=results, table=table)


if __name__ == '__main__':
    main()
