# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Time the unreliable-pixel contrastive loss (memory bank update included).

Example:
    python tools/analysis/benchmark_contrastive_loss.py --sizes paper
    python tools/analysis/benchmark_contrastive_loss.py --device cpu \\
        --sizes small --repeats 5

The timing functions are importable, e.g. to compare the loss against a
full training iteration::

    from tools.analysis.benchmark_contrastive_loss import \\
        time_contrastive_loss
    stats = time_contrastive_loss(device='cuda', sizes='paper')
"""
import argparse
import os.path as osp
import statistics
import sys
import time
from typing import Dict, Optional

import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmseg_u2pl.models.losses.contrastive_loss import \
    UnreliableContrastiveLoss  # noqa: E402

# paper: 21 classes (VOC), 4 labeled + 4 unlabeled crops of 513 per GPU,
# representations of 256 channels at stride 4 (129 x 129), banks of 30000
SIZES = dict(
    small=dict(
        num_classes=6,
        num_labeled=2,
        num_unlabeled=2,
        size=33,
        feat_channels=32,
        memory_size=2000,
        num_anchors=64,
        num_negatives=16),
    paper=dict(
        num_classes=21,
        num_labeled=4,
        num_unlabeled=4,
        size=129,
        feat_channels=256,
        memory_size=30000,
        num_anchors=256,
        num_negatives=50),
)


def make_inputs(sizes: dict,
                device: torch.device,
                seed: int = 0,
                dtype: torch.dtype = torch.float32) -> dict:
    """Random representations, teacher probabilities and labels.

    Teacher logits are scaled per pixel so that confidences (and thus
    entropies and class ranks) vary like a trained network's.

    Args:
        sizes (dict): One entry of :data:`SIZES`.
        device (torch.device): Where the tensors live.
        seed (int): Random seed. Defaults to 0.
        dtype (torch.dtype): Dtype of the features and probabilities.

    Returns:
        dict: Keyword arguments of the loss's ``forward``.
    """
    generator = torch.Generator().manual_seed(seed)
    batch = sizes['num_labeled'] + sizes['num_unlabeled']
    num_classes, channels = sizes['num_classes'], sizes['feat_channels']
    shape = (batch, sizes['size'], sizes['size'])
    scale = 1. + 4. * torch.rand((batch, 1) + shape[1:], generator=generator)
    logits = scale * torch.randn(
        (batch, num_classes) + shape[1:], generator=generator)
    probs = logits.softmax(dim=1)
    labels = probs.argmax(dim=1)
    # labeled rows: ground truth that disagrees with the teacher on 30 %
    noise = torch.randint(num_classes, shape, generator=generator)
    flip = torch.rand(shape, generator=generator) < 0.3
    labels = torch.where(flip, noise, labels)
    labels[:sizes['num_labeled']] = torch.where(
        torch.rand((sizes['num_labeled'], ) + shape[1:], generator=generator)
        < 0.05, 255, labels[:sizes['num_labeled']])
    labels[sizes['num_labeled']:] = probs[sizes['num_labeled']:].argmax(1)
    student = torch.randn((batch, channels) + shape[1:], generator=generator)
    teacher = torch.randn((batch, channels) + shape[1:], generator=generator)
    return dict(
        student_feats=student.to(device, dtype).requires_grad_(),
        teacher_feats=teacher.to(device, dtype),
        teacher_probs=probs.to(device, dtype),
        labels=labels.to(device),
        num_labeled=sizes['num_labeled'],
        alpha=20.)


def build_loss(sizes: dict,
               device: torch.device,
               bank_dtype: str = 'float32') -> UnreliableContrastiveLoss:
    """The loss at the given sizes, banks already full (steady state)."""
    loss = UnreliableContrastiveLoss(
        num_classes=sizes['num_classes'],
        feat_channels=sizes['feat_channels'],
        memory_size=sizes['memory_size'],
        num_anchors=sizes['num_anchors'],
        num_negatives=sizes['num_negatives'],
        bank_dtype=bank_dtype).to(device)
    bank = loss.memory_bank
    class_ids = torch.arange(
        sizes['num_classes'],
        device=device).repeat_interleave(sizes['memory_size'])
    bank.push(
        class_ids,
        torch.randn(class_ids.shape[0], sizes['feat_channels'], device=device))
    return loss


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _summary(times_ms: list) -> Dict[str, float]:
    return dict(
        mean_ms=statistics.fmean(times_ms),
        median_ms=statistics.median(times_ms),
        min_ms=min(times_ms),
        max_ms=max(times_ms))


def time_contrastive_loss(
        device: Optional[str] = None,
        sizes: str = 'paper',
        repeats: int = 20,
        warmup: int = 3,
        bank_dtype: str = 'float32',
        input_dtype: torch.dtype = torch.float32
) -> Dict[str, Dict[str, float]]:
    """Time forward and forward + backward of the contrastive loss.

    Every call of the loss pushes its negative candidates into the memory
    bank, so the bank update is part of both timings.

    Args:
        device (str, optional): ``'cuda'``, ``'cpu'``, ... Defaults to cuda
            when available, else cpu.
        sizes (str): A key of :data:`SIZES`. Defaults to ``'paper'``.
        repeats (int): Timed calls per stage. Defaults to 20.
        warmup (int): Untimed calls first. Defaults to 3.
        bank_dtype (str): Storage dtype of the bank. Defaults to
            ``'float32'``.
        input_dtype (torch.dtype): Dtype of features and probabilities
            (e.g. ``torch.float16`` as under AMP).

    Returns:
        dict: ``{'forward': stats, 'forward_backward': stats}`` with
        ``mean_ms``, ``median_ms``, ``min_ms``, ``max_ms``, plus
        ``'info'`` (sizes, device, and ``peak_mem_mb`` on CUDA).
    """
    if sizes not in SIZES:
        raise ValueError(f'sizes must be one of {sorted(SIZES)}, got '
                         f'{sizes!r}')
    if repeats <= 0 or warmup < 0:
        raise ValueError('repeats must be > 0 and warmup >= 0, got '
                         f'repeats={repeats}, warmup={warmup}')
    device = torch.device(
        device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    config = SIZES[sizes]
    loss = build_loss(config, device, bank_dtype)
    inputs = make_inputs(config, device, dtype=input_dtype)
    student = inputs['student_feats']

    def forward():
        with torch.no_grad():
            loss(**inputs)

    def forward_backward():
        value, _ = loss(**inputs)
        value.backward()
        student.grad = None

    results = {}
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    for name, step in (('forward', forward), ('forward_backward',
                                              forward_backward)):
        for _ in range(warmup):
            step()
        times_ms = []
        for _ in range(repeats):
            _synchronize(device)
            start = time.perf_counter()
            step()
            _synchronize(device)
            times_ms.append((time.perf_counter() - start) * 1e3)
        results[name] = _summary(times_ms)
    info = dict(
        config,
        device=str(device),
        bank_dtype=bank_dtype,
        input_dtype=str(input_dtype).replace('torch.', ''))
    if device.type == 'cuda':
        info['peak_mem_mb'] = torch.cuda.max_memory_allocated(device) / 2**20
    results['info'] = info
    return results


def format_table(results: Dict[str, Dict[str, float]]) -> str:
    """Markdown table of :func:`time_contrastive_loss`'s result."""
    lines = [
        '| stage | mean ms | median ms | min ms | max ms |',
        '|---|---|---|---|---|',
    ]
    for name in ('forward', 'forward_backward'):
        stats = results[name]
        lines.append(f"| {name} | {stats['mean_ms']:.2f} | "
                     f"{stats['median_ms']:.2f} | {stats['min_ms']:.2f} | "
                     f"{stats['max_ms']:.2f} |")
    info = ', '.join(f'{key}={value}'
                     for key, value in results['info'].items())
    return '\n'.join(lines + ['', info])


def parse_args():
    parser = argparse.ArgumentParser(
        description='Time the U2PL contrastive loss (bank update included)')
    parser.add_argument(
        '--device',
        default=None,
        help='cuda, cpu, ... (default: cuda if available)')
    parser.add_argument('--sizes', choices=sorted(SIZES), default='paper')
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument(
        '--bank-dtype',
        default='float32',
        choices=['float32', 'float16', 'bfloat16'])
    parser.add_argument(
        '--input-dtype',
        default='float32',
        choices=['float32', 'float16', 'bfloat16'])
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='torch CPU threads (default: torch default)')
    return parser.parse_args()


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = time_contrastive_loss(
        device=args.device,
        sizes=args.sizes,
        repeats=args.repeats,
        warmup=args.warmup,
        bank_dtype=args.bank_dtype,
        input_dtype=getattr(torch, args.input_dtype))
    print(format_table(results))


if __name__ == '__main__':
    main()
