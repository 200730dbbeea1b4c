# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Time the unreliable-pixel contrastive loss (memory bank update included).

At the same sizes it also times the unsupervised loss ``L_u`` (teacher
probabilities, entropy filter and cross-entropy at the crop size, forward
and backward) and prints the contrastive loss as a ratio to it; with
``--iteration`` it also times one full U2PL training iteration of a config
at that crop and prints both losses as shares of it.

Example:
    python tools/analysis/benchmark_contrastive_loss.py --sizes paper
    python tools/analysis/benchmark_contrastive_loss.py --device cpu \\
        --sizes small --repeats 5
    # GPU: the losses as shares of the paper's VOC iteration
    python tools/analysis/benchmark_contrastive_loss.py --sizes paper \\
        --iteration configs/voc/u2pl_*_voc-classic-366-513x513.py

The timing functions are importable, e.g. to compare the loss against a
full training iteration::

    from tools.analysis.benchmark_contrastive_loss import \\
        time_contrastive_loss
    stats = time_contrastive_loss(device='cuda', sizes='paper')
"""
import argparse
import copy
import os.path as osp
import statistics
import sys
import time
from typing import Dict, Optional

import torch
import torch.nn.functional as F

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmseg_u2pl.models.losses.contrastive_loss import \
    UnreliableContrastiveLoss  # noqa: E402
from mmseg_u2pl.models.utils.reliability import (  # noqa: E402
    entropy, entropy_filtered_loss)

if osp.dirname(osp.abspath(__file__)) not in sys.path:
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import (  # noqa: E402
    add_allocator_argument, build_bench_optim_wrapper, build_variant,
    config_batch_and_crop, fake_batch, load_bench_config, resolve_device,
    set_train_progress, sync, use_training_allocator)

# paper: 21 classes (VOC), 4 labeled + 4 unlabeled crops of 513 per GPU,
# representations of 256 channels at stride 4 (129 x 129), banks of 30000;
# the unsupervised loss works on logits at stride 4 upsampled to the crop
SIZES = dict(
    small=dict(
        num_classes=6,
        num_labeled=2,
        num_unlabeled=2,
        crop=129,
        size=33,
        feat_channels=32,
        memory_size=2000,
        num_anchors=64,
        num_negatives=16),
    paper=dict(
        num_classes=21,
        num_labeled=4,
        num_unlabeled=4,
        crop=513,
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


def _summary(times_ms: list) -> Dict[str, float]:
    return dict(
        mean_ms=statistics.fmean(times_ms),
        median_ms=statistics.median(times_ms),
        min_ms=min(times_ms),
        max_ms=max(times_ms))


def _time(step, device: torch.device, repeats: int, warmup: int) -> dict:
    """Summary of ``repeats`` timed calls of ``step`` after ``warmup``."""
    for _ in range(warmup):
        step()
    times_ms = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times_ms.append((time.perf_counter() - start) * 1e3)
    return _summary(times_ms)


def _time_stages(forward, forward_backward, device: torch.device, repeats: int,
                 warmup: int) -> Dict[str, Dict[str, float]]:
    return dict(
        forward=_time(forward, device, repeats, warmup),
        forward_backward=_time(forward_backward, device, repeats, warmup))


def time_unsupervised_loss(
        device: Optional[str] = None,
        sizes: str = 'paper',
        repeats: int = 20,
        warmup: int = 3,
        input_dtype: torch.dtype = torch.float32
) -> Dict[str, Dict[str, float]]:
    """Time the unsupervised loss ``L_u`` as the U2PL step computes it.

    From teacher and student logits at the representation size (stride 4)
    of the ``num_unlabeled`` images: teacher logits upsampled to the crop,
    softmax, argmax and entropy (the pseudo-labels), the student logits
    upsampled to the crop, and :func:`entropy_filtered_loss`.

    Args and returns: as :func:`time_contrastive_loss`.
    """
    if sizes not in SIZES:
        raise ValueError(f'sizes must be one of {sorted(SIZES)}, got '
                         f'{sizes!r}')
    device = resolve_device(device)
    config = SIZES[sizes]
    generator = torch.Generator().manual_seed(0)
    shape = (config['num_unlabeled'], config['num_classes'], config['size'],
             config['size'])
    teacher = (3 * torch.randn(shape, generator=generator)).to(
        device, input_dtype)
    student = torch.randn(
        shape, generator=generator).to(device, input_dtype).requires_grad_()
    crop = (config['crop'], config['crop'])

    def loss():
        with torch.no_grad():
            probs = F.interpolate(
                teacher.float(), crop, mode='bilinear',
                align_corners=False).softmax(dim=1)
            pseudo, ent = probs.argmax(dim=1), entropy(probs)
            valid = torch.ones_like(pseudo, dtype=torch.bool)
        logits = F.interpolate(
            student, crop, mode='bilinear', align_corners=False)
        return entropy_filtered_loss(logits, pseudo, ent, valid, 20.)[0]

    def forward():
        with torch.no_grad():
            loss()

    def forward_backward():
        loss().backward()
        student.grad = None

    results = _time_stages(forward, forward_backward, device, repeats, warmup)
    results['info'] = dict(
        num_unlabeled=config['num_unlabeled'],
        num_classes=config['num_classes'],
        size=config['size'],
        crop=config['crop'],
        device=str(device))
    return results


def time_iteration(config: str,
                   crop: int,
                   device: Optional[str] = None,
                   repeats: int = 5,
                   warmup: int = 2,
                   amp: bool = False) -> Dict[str, float]:
    """Time one U2PL ``train_step`` of ``config`` at ``crop``.

    The config's per-GPU batch, fake images and labels, the optimizer step
    included (see ``benchmark_step.py``); ``amp`` trains with mixed
    precision as ``tools/train.py --amp``.
    """
    device = resolve_device(device)
    cfg = load_bench_config(config, device, crop=crop)
    num_labeled = config_batch_and_crop(cfg)[0]
    model = build_variant(cfg, 'u2pl', device)
    set_train_progress(1, 100)
    wrapper = build_bench_optim_wrapper(cfg, model, device, amp)
    batch = fake_batch('u2pl', cfg, num_labeled, crop)
    return _time(lambda: model.train_step(copy.deepcopy(batch), wrapper),
                 device, repeats, warmup)


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
    device = resolve_device(device)
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

    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    results = _time_stages(forward, forward_backward, device, repeats, warmup)
    info = dict(
        config,
        device=str(device),
        bank_dtype=bank_dtype,
        input_dtype=str(input_dtype).replace('torch.', ''))
    if device.type == 'cuda':
        info['peak_mem_mb'] = torch.cuda.max_memory_allocated(device) / 2**20
    results['info'] = info
    return results


def format_table(results: Dict[str, Dict[str, float]],
                 name: str = 'contrastive loss') -> str:
    """Markdown table of :func:`time_contrastive_loss`'s (or
    :func:`time_unsupervised_loss`'s) result."""
    lines = [
        f'| {name} | mean ms | median ms | min ms | max ms |',
        '|---|---|---|---|---|',
    ]
    for stage in ('forward', 'forward_backward'):
        stats = results[stage]
        lines.append(f"| {stage} | {stats['mean_ms']:.2f} | "
                     f"{stats['median_ms']:.2f} | {stats['min_ms']:.2f} | "
                     f"{stats['max_ms']:.2f} |")
    info = ', '.join(f'{key}={value}'
                     for key, value in results['info'].items())
    return '\n'.join(lines + ['', info])


def format_comparison(contrastive: dict,
                      unsupervised: dict,
                      iteration: Optional[dict] = None) -> str:
    """Medians of forward + backward side by side, as ratios."""
    c_ms = contrastive['forward_backward']['median_ms']
    u_ms = unsupervised['forward_backward']['median_ms']
    lines = [
        '| forward + backward (median) | ms | ratio to L_u | share of the '
        'iteration |', '|---|---|---|---|'
    ]
    it_ms = iteration['median_ms'] if iteration else None

    def share(ms):
        return f'{100 * ms / it_ms:.1f} %' if it_ms else 'n/a'

    lines.append(f'| unsupervised loss L_u | {u_ms:.1f} | 1.00 | '
                 f'{share(u_ms)} |')
    lines.append(f'| contrastive loss L_c (bank included) | {c_ms:.1f} | '
                 f'{c_ms / u_ms:.2f} | {share(c_ms)} |')
    if it_ms:
        lines.append(f'| one U2PL iteration | {it_ms:.1f} | '
                     f'{it_ms / u_ms:.2f} | 100 % |')
    lines += [
        '', 'targets: L_c <= L_u on the CPU; L_c < 5 % of the iteration '
        'on a GPU'
    ]
    return '\n'.join(lines)


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
    add_allocator_argument(parser)
    parser.add_argument(
        '--iteration',
        metavar='CONFIG',
        default=None,
        help='also time one U2PL training iteration of this config at the '
        "sizes' crop (ResNet-101 at 513: minutes per iteration on a CPU)")
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision in the --iteration step (fp16 on CUDA, '
        'bfloat16 on CPU); pair it with --input-dtype for the losses')
    return parser.parse_args()


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    input_dtype = getattr(torch, args.input_dtype)
    device = resolve_device(args.device)
    kept = use_training_allocator(device, args.default_malloc)
    contrastive = time_contrastive_loss(
        device=args.device,
        sizes=args.sizes,
        repeats=args.repeats,
        warmup=args.warmup,
        bank_dtype=args.bank_dtype,
        input_dtype=input_dtype)
    unsupervised = time_unsupervised_loss(
        device=args.device,
        sizes=args.sizes,
        repeats=args.repeats,
        warmup=args.warmup,
        input_dtype=input_dtype)
    iteration = None
    if args.iteration:
        iteration = time_iteration(
            args.iteration,
            SIZES[args.sizes]['crop'],
            device=args.device,
            repeats=max(1, min(args.repeats, 5)),
            warmup=1,
            amp=args.amp)
    print(format_table(contrastive))
    print()
    print(format_table(unsupervised, 'unsupervised loss'))
    print()
    print(format_comparison(contrastive, unsupervised, iteration))
    if device.type == 'cpu':
        print('CPU allocator: ' +
              ('freed memory kept for reuse, as in '
               'tools/train.py' if kept else "glibc's default"))


if __name__ == '__main__':
    main()
