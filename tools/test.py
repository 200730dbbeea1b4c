# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Test (and evaluate) a segmentor checkpoint with an MMSegmentation config.

Examples:
    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out DIR]
    bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [--tta ...]
"""
import argparse
import os
import os.path as osp
import sys

# Work from a clone without `pip install -e .`: the repository root first.
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmseg.registry import RUNNERS  # noqa: E402

import mmseg_u2pl  # noqa: E402,F401  (registers our modules)
from mmseg_u2pl.utils.checkpoint import (  # noqa: E402
    refuse_unsafe_checkpoints, register_checkpoint_safe_globals)
from mmseg_u2pl.utils.checkpoint_fit import (  # noqa: E402
    ALLOW_MISMATCH_KEY, check_checkpoint_file)
from mmseg_u2pl.utils.dist_utils import (  # noqa: E402
    LAUNCHERS, exit_without_teardown, shutdown_dist)
from mmseg_u2pl.utils.launch import prepare_launch  # noqa: E402
from mmseg_u2pl.utils.num_classes import check_num_classes  # noqa: E402


def parse_args() -> argparse.Namespace:
    """Command-line arguments, as mmseg's ``tools/test.py``."""
    parser = argparse.ArgumentParser(
        description='MMSeg test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='if specified, the evaluation metric results will be dumped '
        'into the directory as json')
    parser.add_argument(
        '--out',
        type=str,
        help='the directory to save output predictions for offline '
        'evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved; it is placed '
        'under work_dir/timestamp/')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into the config file. If the value '
        'to be overwritten is a list, it should be like key="[a,b]" or '
        'key=a,b; nested lists/tuples are allowed, e.g. '
        'key="[(a,b),(c,d)]". The quotation marks are necessary and no '
        'white space is allowed.')
    parser.add_argument(
        '--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument(
        '--tta', action='store_true', help='test time augmentation')
    # torch.distributed.launch passes `--local-rank` since PyTorch 2.0.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def trigger_visualization_hook(cfg: Config, args: argparse.Namespace,
                               config_path: str) -> None:
    """Turn on drawing (and showing/saving) in the visualization hook."""
    default_hooks = cfg.get('default_hooks', {})
    if 'visualization' not in default_hooks:
        raise KeyError(
            f'--show/--show-dir need a visualization hook, but '
            f'{config_path} has no default_hooks.visualization; add '
            "default_hooks=dict(visualization=dict(type="
            "'SegVisualizationHook')).")
    visualization_hook = default_hooks['visualization']
    visualization_hook['draw'] = True
    if args.show:
        visualization_hook['show'] = True
        visualization_hook['wait_time'] = args.wait_time
    if args.show_dir:
        cfg.visualizer['save_dir'] = args.show_dir


def use_tta(cfg: Config, config_path: str) -> None:
    """Wrap ``cfg.model`` in ``cfg.tta_model`` and use ``tta_pipeline``."""
    missing = [key for key in ('tta_model', 'tta_pipeline') if key not in cfg]
    if missing:
        raise KeyError(f'--tta needs {missing} in {config_path}; add them '
                       "(see mmseg's configs/_base_/datasets/*.py).")
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def check_before_testing(runner: Runner, cfg: Config, checkpoint: str) -> None:
    """Fail before testing a model that does not fit its data or checkpoint.

    Every decode head must predict the test set's classes, and the
    checkpoint must fit the model unless ``allow_checkpoint_mismatch=True``
    (mmengine would skip mismatching weights and test random ones).
    """
    dataset = runner.test_dataloader.dataset
    classes = getattr(dataset, 'metainfo', {}).get('classes')
    check_num_classes(runner.model, classes, 'test_dataloader.dataset')
    if not cfg.get(ALLOW_MISMATCH_KEY, False):
        check_checkpoint_file(runner.model, checkpoint)


def main() -> None:
    args = parse_args()
    for what, path in (('Config', args.config), ('Checkpoint',
                                                 args.checkpoint)):
        if '://' not in path and not osp.isfile(path):
            raise FileNotFoundError(
                f'{what} file {path!r} does not exist: check the path.')
    register_checkpoint_safe_globals()

    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        trigger_visualization_hook(cfg, args, args.config)
    if args.tta:
        use_tta(cfg, args.config)
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    prepare_launch(cfg, args.launcher)

    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)

    try:
        with refuse_unsafe_checkpoints(args.checkpoint):
            check_before_testing(runner, cfg, args.checkpoint)
            runner.test()
    finally:
        distributed = shutdown_dist()
    if distributed:
        exit_without_teardown(0)


if __name__ == '__main__':
    main()
