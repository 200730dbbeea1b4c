# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Train a segmentor (supervised or U2PL) from an MMSegmentation config.

Examples:
    python tools/train.py CONFIG [--work-dir DIR] [--resume] [--amp]
    bash tools/dist_train.sh CONFIG GPUS [--resume ...]
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
from mmengine.runner import Runner, find_latest_checkpoint  # noqa: E402
from mmseg.registry import RUNNERS  # noqa: E402

import mmseg_u2pl  # noqa: E402,F401  (registers our modules)
from mmseg_u2pl.utils.checkpoint import (  # noqa: E402
    refuse_unsafe_checkpoints, register_checkpoint_safe_globals)
from mmseg_u2pl.utils.checkpoint_fit import (  # noqa: E402
    ALLOW_MISMATCH_KEY, check_checkpoint_file)
from mmseg_u2pl.utils.dist_utils import (  # noqa: E402
    LAUNCHERS, exit_without_teardown, shutdown_dist)
from mmseg_u2pl.utils.launch import enable_amp, prepare_launch  # noqa: E402
from mmseg_u2pl.utils.num_classes import check_num_classes  # noqa: E402


def parse_args() -> argparse.Namespace:
    """Command-line arguments, as mmseg's ``tools/train.py``."""
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        action='store_true',
        default=False,
        help='resume from the latest checkpoint in the work_dir automatically')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training (bfloat16 on CPU)')
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
    # torch.distributed.launch passes `--local-rank` since PyTorch 2.0.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def resolve_work_dir(cfg: Config, work_dir: str, config_path: str) -> None:
    """Set ``cfg.work_dir``: CLI > config file > ``work_dirs/<config>``."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config_path))[0])


def checkpoint_to_load(cfg: Config) -> str:
    """The checkpoint the Runner will load (for error messages)."""
    if cfg.get('resume') and cfg.get('load_from') is None:
        return find_latest_checkpoint(cfg.work_dir)
    return cfg.get('load_from')


def check_before_training(runner: Runner, cfg: Config,
                          checkpoint: str) -> None:
    """Fail before the first iteration on a model that does not fit.

    * every decode head must predict the training set's classes;
    * the checkpoint to load or resume from must fit the model, unless
      ``allow_checkpoint_mismatch=True`` (mmengine would skip mismatching
      weights with a warning and train on).

    Builds the train loop (and so the dataset, with its checks) early;
    ``runner.train()`` reuses it.
    """
    dataset = runner.train_dataloader.dataset
    classes = getattr(dataset, 'metainfo', {}).get('classes')
    check_num_classes(runner.model, classes, 'train_dataloader.dataset')
    if checkpoint and not cfg.get(ALLOW_MISMATCH_KEY, False):
        check_checkpoint_file(runner.model, checkpoint)


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.config):
        raise FileNotFoundError(
            f'Config file {args.config!r} does not exist: check the path.')
    register_checkpoint_safe_globals()

    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    resolve_work_dir(cfg, args.work_dir, args.config)
    if args.amp:
        enable_amp(cfg, args.config)
    # After enable_amp: without CUDA this moves AMP to bfloat16 on CPU.
    prepare_launch(cfg, args.launcher)
    cfg.resume = args.resume

    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)

    checkpoint = checkpoint_to_load(cfg)
    try:
        with refuse_unsafe_checkpoints(checkpoint):
            check_before_training(runner, cfg, checkpoint)
            runner.train()
    finally:
        distributed = shutdown_dist()
    if distributed:
        exit_without_teardown(0)


if __name__ == '__main__':
    main()
