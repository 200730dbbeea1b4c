# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Time one U2PL training iteration against the supervised step.

All variants run in one process, interleaved round by round, and are
reported as ratios to the supervised-only step of the same student network
on the same number of images (labeled + unlabeled):

* ``supervised``: the student alone, forward/backward on ``B_l + B_u``
  images (what a supervised run of that batch costs);
* ``floor``: ``supervised`` + one teacher forward on the ``B_u`` unlabeled
  images, the least a U2PL step can cost;
* ``floor with L_c``: ``supervised`` + one teacher forward on all
  ``B_l + B_u`` images, the least a step with the contrastive term can
  cost (it needs teacher probabilities and features of the labeled pixels
  too: prototypes, anchor and negative candidates);
* ``u2pl-nocontrast``, ``u2pl-two-passes`` and ``u2pl-reuse``: the real
  semi-supervised step (``model.train_step``: data preprocessing and
  optimizer step included, as in every variant), without the contrastive
  term, and with it with ``reuse_teacher_forward`` off (a second teacher
  forward on the mixed batch for the contrastive targets, as in the paper)
  and on (one teacher forward); the table marks the config's setting.

It then splits the full U2PL step into its parts (teacher forwards, CutMix,
student, supervised/unsupervised/contrastive losses) with the profiler scopes
recorded by :class:`~mmseg_u2pl.models.segmentors.U2PL`.

Examples::

    # CPU, the toy configuration (64x64 crops, 4 + 4 images)
    python tools/analysis/benchmark_step.py
    # GPU, the paper's VOC setting (ResNet-101, 513 crop, 4 + 4), AMP on/off,
    # with contiguous and with channels-last weights
    python tools/analysis/benchmark_step.py --crop 513 --batch 4 \
        --amp both --channels-last both \
        --config configs/voc/u2pl_*_voc-classic-366-513x513.py
"""
import argparse
import copy
import os.path as osp
import statistics
import sys
import time

import torch

if osp.dirname(osp.abspath(__file__)) not in sys.path:
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import (
    add_allocator_argument,  # noqa: E402
    add_step_arguments,
    build_bench_optim_wrapper,
    build_variant,
    fake_batch,
    load_bench_config,
    resolve_device,
    set_train_progress,
    sync,
    use_training_allocator)

SEMI_VARIANTS = ('u2pl-nocontrast', 'u2pl-two-passes', 'u2pl-reuse')
SCOPES = ('u2pl:teacher_pseudo_labels', 'u2pl:cutmix', 'u2pl:student',
          'u2pl:sup_loss', 'u2pl:unsup_loss', 'u2pl:teacher_contrast',
          'u2pl:contrastive_loss')


def build(args, device):
    """The three networks, their optimizer wrappers and fake batches."""
    cfg = load_bench_config(args.config, device, crop=args.crop)
    models = {
        name: build_variant(cfg, name, device)
        for name in SEMI_VARIANTS + ('supervised', )
    }
    if args.channels_last_on:
        # U2PL's `channels_last=True` converts student and teacher this way
        for model in models.values():
            model.to(memory_format=torch.channels_last)
    set_train_progress(1, 100)
    wrappers = {
        name: build_bench_optim_wrapper(cfg, model, device, args.amp_on)
        for name, model in models.items()
    }
    # the row and the profile of the config's own setting
    reuse = (cfg.model.get('semi_train_cfg')
             or {}).get('reuse_teacher_forward', False)
    args.configured = 'u2pl-reuse' if reuse else 'u2pl-two-passes'
    semi_batch = fake_batch('u2pl', cfg, args.batch, args.crop)
    # the supervised step sees as many images as the U2PL step
    sup_batch = fake_batch('supervised-x2', cfg, args.batch, args.crop)
    return models, wrappers, semi_batch, sup_batch


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_step_arguments(parser)
    parser.add_argument('--rounds', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--amp', choices=['off', 'on', 'both'], default='off')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument(
        '--channels-last',
        choices=['off', 'on', 'both'],
        default='off',
        help='4-D weights in channels-last memory format (the segmentor\'s '
        '`channels_last=True`), for every variant')
    add_allocator_argument(parser)
    args = parser.parse_args()
    device = resolve_device(args.device)
    use_training_allocator(device, args.default_malloc)
    if args.threads:
        torch.set_num_threads(args.threads)
    choices = {'off': [False], 'on': [True], 'both': [False, True]}
    for channels_last in choices[args.channels_last]:
        for amp in choices[args.amp]:
            args.amp_on, args.channels_last_on = amp, channels_last
            run(args, device)


def run(args, device):
    models, wrappers, semi_batch, sup_batch = build(args, device)
    configured = args.configured
    # the teacher forward on B_u alone is the same with or without the
    # contrastive branch
    semi, supervised = models['u2pl-nocontrast'], models['supervised']

    def teacher_forward(branches):
        with torch.no_grad():
            inputs = semi.data_preprocessor(copy.deepcopy(semi_batch),
                                            True)['inputs']
            semi._run(semi.teacher,
                      torch.cat([inputs[branch] for branch in branches]),
                      False)

    steps = {
        'supervised':
        lambda: supervised.train_step(
            copy.deepcopy(sup_batch), wrappers['supervised']),
        'teacher forward (B_u)':
        lambda: teacher_forward(['unlabeled']),
        'teacher forward (B_l + B_u)':
        lambda: teacher_forward(['labeled', 'unlabeled']),
    }

    def semi_step(name):
        return lambda: models[name].train_step(
            copy.deepcopy(semi_batch), wrappers[name])

    for name in SEMI_VARIANTS:
        steps[name] = semi_step(name)
    times = {name: [] for name in steps}
    for round_idx in range(args.warmup + args.rounds):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            if round_idx >= args.warmup:
                times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(v) * 1000 for name, v in times.items()}
    sup = med['supervised']
    floor = sup + med['teacher forward (B_u)']
    floor_contrast = sup + med['teacher forward (B_l + B_u)']
    print(f'\ndevice: {device}, AMP: {"on" if args.amp_on else "off"}, '
          f'channels-last: {"on" if args.channels_last_on else "off"}, '
          f'crop {args.crop}, {args.batch} labeled + {args.batch} unlabeled '
          f'images, {args.rounds} rounds (median)\n')
    print('| step | ms / iter | ratio to supervised |')
    print('|---|---|---|')
    print(f'| supervised ({2 * args.batch} images) | {sup:.1f} | 1.00 |')
    print(f'| floor (supervised + teacher forward on B_u) | {floor:.1f} | '
          f'{floor / sup:.2f} |')
    print(f'| floor with L_c (supervised + teacher forward on B_l + B_u) | '
          f'{floor_contrast:.1f} | {floor_contrast / sup:.2f} |')
    for name in SEMI_VARIANTS:
        label = f'{name} (the config)' if name == configured else name
        print(f'| {label} | {med[name]:.1f} | {med[name] / sup:.2f} |')

    # where the full U2PL step (as configured) spends its time
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU]
    if device.type == 'cuda':
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(3):
            steps[configured]()
            sync(device)
    totals = {}
    for event in prof.key_averages():
        if event.key in SCOPES:
            cuda_time = getattr(event, 'device_time_total',
                                getattr(event, 'cuda_time_total', 0))
            value = cuda_time if device.type == 'cuda' else \
                event.cpu_time_total
            totals[event.key] = value / 3 / 1000
    print('\n| part of the U2PL step (forward only) | ms / iter | share of '
          'the step |')
    print('|---|---|---|')
    for scope in SCOPES:
        if scope in totals:
            print(f'| {scope[5:]} | {totals[scope]:.1f} | '
                  f'{100 * totals[scope] / med[configured]:.1f} % |')
    rest = med[configured] - sum(totals.values())
    print(f'| backward, optimizer, rest | {rest:.1f} | '
          f'{100 * rest / med[configured]:.1f} % |')
    if device.type == 'cuda':
        print(f'\npeak GPU memory: '
              f'{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB')


if __name__ == '__main__':
    main()
