# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Check the own-dataset template on datasets it was not calibrated on.

The question (docs/benchmarks.md, "Own-data check"): does
``configs/u2pl/u2pl_deeplabv3plus_r18-d8_1xb4+4-80e_custom-512x512.py``,
used as the README says, beat supervised training of the same network on
the same labels, and which of its networks (teacher, student, the one it
keeps) does?

For each dataset of ``tools/dataset_converters/folder_datasets.py``
(``regions``, ``objects``), each start (``pretrained``: the toy
source-task checkpoint of ``tools/analysis/pretrain_toy_backbone.py``;
``scratch``) and each seed it trains (all pairs of the first start first):

- ``u2pl``: the template with what the README tells a user to edit (the
  marked block, the crop and scale for the images, a shorter
  ``max_epochs``), and, to fit 2 CPU cores, the toy network (ResNet-18-V1c
  with 32 base channels, the toy DeepLabV3+ head) and 2 dataloader workers;
  validation every epoch. Everything else is the template's own: SGD 0.01
  poly, 4 + 4 images, 1 epoch of warm-up, EMA decay up to 0.99, the
  paper's U2PL settings, the better network kept.
- ``supervised``: the same file's student alone on the labeled list, for
  the same number of iterations (epochs x unlabeled images // 4), validated
  at the same iterations.

It reports, per dataset and start, the final mIoU of supervised, the U2PL
teacher, student and the better of the two at the last validation
(``better/mIoU``; each run's result file also holds the best validation of
either arm, ``best`` and ``best_kept``: what the best checkpoint holds),
mean ± standard error over the seeds, and the seed-paired differences from
supervised. Outputs in ``--work-dir``: ``own_data_check.md`` and
``own_data_check.json`` (the runs of this invocation). A finished run
(``<run>/own_data_result.json``) is reused when it was trained with the
same epochs and dataset version, and refused otherwise.

Example::

    python tools/analysis/own_data_check.py --jobs 2
    python tools/analysis/own_data_check.py --datasets regions \\
        --inits pretrained --seeds 0 --jobs 2
"""
import argparse
import json
import os
import os.path as osp
import re
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Dict, List, NamedTuple, Optional, Sequence

if osp.dirname(osp.abspath(__file__)) not in sys.path:
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import ROOT  # noqa: E402
from folder_datasets import DATASETS, make_folder_dataset  # noqa: E402
from label_efficiency import (mean_std, read_scalars,  # noqa: E402
                              run_training)

TEMPLATE = osp.join(
    ROOT, 'configs', 'u2pl',
    'u2pl_deeplabv3plus_r18-d8_1xb4+4-80e_custom-512x512.py')
PRETRAINED = osp.expanduser('~/.cache/mmseg_u2pl/pretrained/'
                            'resnet18-v1c-c32_toy-source-attributes.pth')
#: Epochs of the unlabeled images per dataset (the template's 80, shortened
#: to fit 2 CPU cores: 700 and 840 iterations).
EPOCHS = {'regions': 5, 'objects': 10}
INITS = ('pretrained', 'scratch')
METHODS = ('u2pl', 'supervised')
RESULT_FILE = 'own_data_result.json'
#: The toy network (configs/_base_/models/deeplabv3plus_r18-d8_toy.py).
TOY_NETWORK = {
    'backbone.stem_channels': 32,
    'backbone.base_channels': 32,
    'decode_head.in_channels': 256,
    'decode_head.channels': 64,
    'decode_head.dilations': (1, 2, 4, 6),
    'decode_head.c1_in_channels': 32,
    'decode_head.c1_channels': 16,
}


class Run(NamedTuple):
    dataset: str
    init: str
    method: str
    seed: int

    @property
    def name(self) -> str:
        return f'{self.dataset}_{self.init}_{self.method}_seed{self.seed}'


def edit_template(text: str, values: Dict[str, object]) -> str:
    """Set top-level assignments of the template, as a user edits it.

    Raises:
        ValueError: When a name is not assigned exactly once at the start of
            a line (the template changed; the tool must follow it).
    """
    for name, value in values.items():
        pattern = re.compile(rf'^{name} = .*$', re.MULTILINE)
        if len(pattern.findall(text)) != 1:
            raise ValueError(f'{TEMPLATE}: expected one line "{name} = ..."')
        text = pattern.sub(lambda _, line=f'{name} = {value!r}': line, text)
    return text


def iters_per_epoch(meta: dict, batch_size: int = 4) -> int:
    """Iterations of one epoch of ``SemiDataset`` (its length is the larger
    of the two lists; the last partial batch is dropped)."""
    return max(meta['labeled'], meta['unlabeled']) // batch_size


def build_config(run: Run, meta: dict, data_root: str, run_dir: str,
                 num_workers: int):
    """The run's config: the edited template, then the run's changes."""
    from mmengine.config import Config
    epochs = EPOCHS[run.dataset]
    size = meta['img_size']
    text = edit_template(
        open(TEMPLATE).read(),
        dict(
            data_root=data_root,
            img_suffix=meta['img_suffix'],
            classes=tuple(meta['classes']),
            palette=meta['palette'],
            crop_size=(size, size),
            scale=(4 * size, size),
            max_epochs=epochs,
            val_interval=1))
    os.makedirs(run_dir, exist_ok=True)
    edited = osp.join(run_dir, 'template_edited.py')
    with open(edited, 'w') as f:
        f.write(text)
    cfg = Config.fromfile(edited)
    options = {f'model.segmentor.{k}': v for k, v in TOY_NETWORK.items()}
    if run.init == 'scratch':
        options['model.segmentor.backbone.init_cfg'] = None
    else:
        options['model.segmentor.backbone.init_cfg.checkpoint'] = PRETRAINED
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options[f'{loader}.num_workers'] = num_workers
        options[f'{loader}.persistent_workers'] = num_workers > 0
    options['randomness.seed'] = run.seed
    cfg.merge_from_dict(options)
    if run.method == 'supervised':
        to_supervised(cfg, epochs * iters_per_epoch(meta),
                      iters_per_epoch(meta))
    return cfg


def to_supervised(cfg, max_iters: int, val_interval: int) -> None:
    """The template's student alone on its labeled list, iteration-based."""
    cfg.model = cfg.model.segmentor
    cfg.train_dataloader.dataset = cfg.train_dataloader.dataset.labeled
    cfg.train_cfg = dict(
        type='IterBasedTrainLoop',
        max_iters=max_iters,
        val_interval=val_interval)
    cfg.val_cfg = dict(type='ValLoop')
    poly = dict(cfg.param_scheduler[0], end=max_iters, by_epoch=False)
    poly.pop('convert_to_iter_based')
    cfg.param_scheduler = [poly]
    cfg.custom_hooks = []
    cfg.default_hooks.checkpoint.update(
        by_epoch=False, interval=val_interval, save_best='mIoU')
    cfg.default_hooks.logger.log_metric_by_epoch = False
    cfg.log_processor = dict(by_epoch=False)


def read_validations(run_dir: str) -> List[dict]:
    """Validation records of the newest ``vis_data/scalars.json``."""
    return [
        r for r in read_scalars(run_dir) if 'mIoU' in r or 'teacher/mIoU' in r
    ]


def train_one(run: Run, meta: dict, data_root: str, run_dir: str,
              num_workers: int) -> dict:
    """Train one run in a ``tools/train.py`` subprocess; store its result."""
    if osp.isdir(run_dir):  # interrupted: start clean
        shutil.rmtree(run_dir)
    cfg = build_config(run, meta, data_root, run_dir, num_workers)
    config = osp.join(run_dir, 'config.py')
    cfg.dump(config)
    wall = run_training([
        sys.executable,
        osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', run_dir
    ], run_dir)
    vals = read_validations(run_dir)
    if len(vals) != EPOCHS[run.dataset]:
        raise RuntimeError(f'{run.name}: {len(vals)} validations logged, '
                           f'expected {EPOCHS[run.dataset]}; see '
                           f'{osp.join(run_dir, "train.log")}')
    last = vals[-1]
    result = dict(
        run._asdict(),
        epochs=EPOCHS[run.dataset],
        version=meta['version'],
        wall_s=wall)
    if run.method == 'u2pl':
        result.update(
            teacher=last['teacher/mIoU'],
            student=last['student/mIoU'],
            kept=last['better/mIoU'],
            kept_network=('teacher' if last['teacher/mIoU'] >=
                          last['student/mIoU'] else 'student'),
            best_kept=max(v['better/mIoU'] for v in vals))
    else:
        result.update(
            supervised=last['mIoU'], best=max(v['mIoU'] for v in vals))
    with open(osp.join(run_dir, RESULT_FILE), 'w') as f:
        json.dump(result, f, indent=2)
    return result


def mean_se(values: Sequence[float]) -> str:
    if not values:
        return '-'
    mean, std = mean_std(values)
    if len(values) < 2:
        return f'{mean:.2f}'
    return f'{mean:.2f} ± {std / len(values)**0.5:.2f}'


def summarize(results: Sequence[dict], datasets: Sequence[str],
              inits: Sequence[str]) -> str:
    """The Markdown table: means and paired differences from supervised."""
    lines = [
        '| dataset | start | seeds | supervised | U2PL teacher | U2PL student'
        ' | U2PL kept | teacher - sup. | student - sup. | kept - sup. '
        '| kept is |', '|' + '---|' * 11
    ]
    for dataset in datasets:
        for init in inits:
            by_seed = {method: {} for method in METHODS}
            for r in results:
                if (r['dataset'], r['init']) == (dataset, init):
                    by_seed[r['method']][r['seed']] = r
            sup, semi = by_seed['supervised'], by_seed['u2pl']
            seeds = sorted(set(sup) & set(semi))
            if not seeds:
                continue

            def column(key, source):
                return [source[s][key] for s in seeds]

            def diff(key):
                return [semi[s][key] - sup[s]['supervised'] for s in seeds]

            kept = [semi[s]['kept_network'] for s in seeds]
            lines.append(
                f'| {dataset} | {init} | {len(seeds)} '
                f'| {mean_se(column("supervised", sup))} '
                f'| {mean_se(column("teacher", semi))} '
                f'| {mean_se(column("student", semi))} '
                f'| {mean_se(column("kept", semi))} '
                f'| {mean_se(diff("teacher"))} | {mean_se(diff("student"))} '
                f'| {mean_se(diff("kept"))} '
                f'| teacher {kept.count("teacher")}, student '
                f'{kept.count("student")} |')
    return '\n'.join(lines) + '\n'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--datasets', nargs='+', choices=list(DATASETS), default=['regions',
                                                                  'objects'])
    parser.add_argument(
        '--inits', nargs='+', choices=INITS, default=list(INITS))
    parser.add_argument(
        '--seeds', nargs='+', type=int, default=[0, 1, 2, 3])
    parser.add_argument(
        '--methods',
        nargs='+',
        choices=METHODS,
        default=list(METHODS),
        help='e.g. supervised alone to see that a dataset is learnt')
    parser.add_argument('--jobs', type=int, default=1)
    parser.add_argument(
        '--num-workers', type=int, default=2, help='default: %(default)s')
    parser.add_argument(
        '--data-dir',
        default='data/own_data_check',
        help='where the datasets are written (default: %(default)s)')
    parser.add_argument(
        '--work-dir',
        default='work_dirs/own_data_check',
        help='default: %(default)s')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> List[dict]:
    args = parse_args(argv)
    if 'pretrained' in args.inits and not osp.isfile(PRETRAINED):
        sys.exit(f'error: {PRETRAINED} does not exist; make it with '
                 'python tools/analysis/pretrain_toy_backbone.py (about 8 '
                 'minutes) or pass --inits scratch')
    os.makedirs(args.work_dir, exist_ok=True)
    metas = {}
    for dataset in args.datasets:
        root = osp.abspath(osp.join(args.data_dir, dataset))
        try:
            metas[dataset] = (make_folder_dataset(dataset, root), root)
        except FileExistsError as err:
            sys.exit(f'error: {err}')
    # start by start, then seed by seed, so that an interrupted check has
    # whole pairs of the first start
    runs = [
        Run(d, i, m, s) for i in args.inits for s in args.seeds
        for d in args.datasets for m in args.methods
    ]
    results, todo = [], []
    for run in runs:
        path = osp.join(args.work_dir, run.name, RESULT_FILE)
        if not osp.isfile(path):
            todo.append(run)
            continue
        with open(path) as f:
            result = json.load(f)
        wanted = (EPOCHS[run.dataset], metas[run.dataset][0]['version'])
        if (result.get('epochs'), result.get('version')) != wanted:
            sys.exit(f'error: {path} was trained with epochs, version '
                     f'{result.get("epochs")}, {result.get("version")}, not '
                     f'{wanted[0]}, {wanted[1]}: remove that folder or use '
                     'another --work-dir')
        results.append(result)
    print(f'[own_data_check] {len(todo)} run(s) to train, {len(results)} '
          f'reused; {args.jobs} at a time')
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {
            pool.submit(train_one, run, *metas[run.dataset],
                        osp.join(args.work_dir, run.name), args.num_workers):
            run
            for run in todo
        }
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            print(f'[own_data_check] {futures[future].name}: ' + ', '.join(
                f'{k} {result[k]:.2f}'
                for k in ('supervised', 'teacher', 'student')
                if k in result) + f' ({result["wall_s"]:.0f} s)')
            table = summarize(results, args.datasets, args.inits)
            with open(osp.join(args.work_dir, 'own_data_check.md'), 'w') as f:
                f.write(table)
            with open(osp.join(args.work_dir, 'own_data_check.json'),
                      'w') as f:
                json.dump(results, f, indent=2)
    print(summarize(results, args.datasets, args.inits))
    return results


if __name__ == '__main__':
    main()
