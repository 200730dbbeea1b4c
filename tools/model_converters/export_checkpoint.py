# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Export one network of a mean-teacher checkpoint as a plain mmseg model.

One script of about 520 lines: the weights and the config are exported
together, and the tests import its functions from here.

A U2PL checkpoint holds two segmentors (``teacher.*`` and ``student.*`` keys)
plus semi-supervised state (memory banks, representation heads). This tool
writes a checkpoint and a config that plain MMSegmentation can use with
``mmseg.apis.init_model`` or ``tools/test.py``::

    python tools/model_converters/export_checkpoint.py CONFIG CHECKPOINT \\
        OUT_DIR [--which auto|teacher|student] [--name NAME]

``--which auto`` (the default) exports the network that validated better
at the checkpoint's last validation (``TeacherStudentValLoop`` records it
in the checkpoint's MessageHub), and the teacher, the network the paper
evaluates, when the checkpoint records none.

It writes ``OUT_DIR/NAME.pth`` (``{'meta': ..., 'state_dict': ...}``, plain
segmentor keys, tensors only) and ``OUT_DIR/NAME.py`` (``model`` is the
config's ``model.segmentor``; training and semi-supervised parts removed;
``custom_imports`` of ``mmseg_u2pl`` kept only where the model, pipelines,
datasets or hooks that remain still need one of its types). ``NAME``
defaults to ``<config name>_<which>``.
"""
import argparse
import copy
import os
import os.path as osp
import sys
import time
from collections import OrderedDict
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from mmengine.config import Config

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmseg_u2pl.engine.runner.teacher_student_val_loop import \
    BETTER_NETWORK_KEY  # noqa: E402
from mmseg_u2pl.utils.checkpoint import (  # noqa: E402
    UnsafeCheckpointError, load_checkpoint_safely)

PACKAGE = 'mmseg_u2pl'
NETWORKS = ('teacher', 'student')
#: Sub-modules of our segmentors that plain mmseg does not have.
EXTRA_SUBMODULES = ('representation_head', )
#: Top-level config keys only used for training; dropped.
TRAINING_KEYS = ('train_dataloader', 'train_cfg', 'optim_wrapper', 'optimizer',
                 'optimizer_config', 'param_scheduler', 'lr_config',
                 'auto_scale_lr', 'resume')
#: Top-level config keys that the runner or ``init_model`` builds.
BUILT_KEYS = ('model', 'test_pipeline', 'val_dataloader', 'test_dataloader',
              'val_evaluator', 'test_evaluator', 'val_cfg', 'test_cfg',
              'default_hooks', 'custom_hooks', 'visualizer', 'log_processor',
              'tta_model', 'tta_pipeline')
#: Checkpoint meta entries that describe the training run, not the model
#: (hook messages, per-rank random states and BN statistics of the runner).
DROPPED_META = ('hook_msgs', 'cfg', 'random_states', 'rank_norm_buffers')


class ExportError(ValueError):
    """Raised for a config or checkpoint this tool cannot export."""


# --------------------------------------------------------------------------
# checkpoint
# --------------------------------------------------------------------------
def load_checkpoint_file(path: str, trust: bool = False) -> dict:
    """Load a checkpoint on CPU without executing arbitrary pickled code.

    Loads with ``weights_only=True`` and the allow-list of
    :func:`mmseg_u2pl.utils.checkpoint.load_checkpoint_safely`; only
    ``trust=True`` allows a full unpickle of a file that list refuses.

    Args:
        path (str): Checkpoint file.
        trust (bool): Fall back to ``weights_only=False``. Defaults to False.

    Returns:
        dict: The loaded checkpoint.
    """
    try:
        return load_checkpoint_safely(path)
    except UnsafeCheckpointError as error:
        if not trust:
            raise ExportError(
                f'{error} Or, if you trust the file, run again with '
                '--trust-checkpoint.') from error
    return torch.load(path, map_location='cpu', weights_only=False)


def _strip_wrapper_prefix(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """Remove a ``module.`` prefix that every key has (DDP state dicts)."""
    if state_dict and all(key.startswith('module.') for key in state_dict):
        return {key[len('module.'):]: v for key, v in state_dict.items()}
    return state_dict


def get_state_dict(checkpoint: dict, path: str = 'checkpoint') -> dict:
    """The model state dict of a loaded checkpoint.

    Args:
        checkpoint (dict): A loaded checkpoint, with or without the
            ``state_dict`` level.
        path (str): File name used in error messages.

    Returns:
        dict: The state dict.
    """
    if not isinstance(checkpoint, dict):
        raise ExportError(f'{path}: expected a dict checkpoint, got '
                          f'{type(checkpoint).__name__}.')
    state_dict = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state_dict, dict):
        raise ExportError(f'{path}: "state_dict" is a '
                          f'{type(state_dict).__name__}, expected a dict.')
    return _strip_wrapper_prefix(state_dict)


def extract_network(state_dict: Dict[str, Any],
                    which: str = 'teacher',
                    path: str = 'checkpoint') -> 'OrderedDict[str, Any]':
    """Plain segmentor weights of one network of a mean-teacher state dict.

    Keeps ``<which>.*`` tensors with the prefix removed and drops everything
    else: the other network, other top-level modules (e.g.
    ``contrastive_loss.*``), sub-modules plain mmseg does not have
    (``representation_head``) and non-tensor entries.

    Args:
        state_dict (dict): State dict of a ``MeanTeacherSegmentor``.
        which (str): ``'teacher'`` or ``'student'``. Defaults to 'teacher'.
        path (str): File name used in error messages.

    Returns:
        OrderedDict: Plain mmseg state dict.
    """
    if which not in NETWORKS:
        raise ExportError(f'which must be one of {NETWORKS}, got {which!r}.')
    networks = {key.split('.', 1)[0] for key in state_dict} & set(NETWORKS)
    if not networks:
        raise ExportError(
            f'{path}: no "teacher." or "student." keys in the state dict '
            f'(first keys: {list(state_dict)[:5]}). This tool exports '
            'mean-teacher (U2PL) checkpoints; a plain mmseg checkpoint needs '
            'no export.')
    if which not in networks:
        raise ExportError(f'{path}: no "{which}." keys in the state dict, '
                          f'only {sorted(networks)}. Choose --which '
                          f'{sorted(networks)[0]}.')
    prefix = f'{which}.'
    plain = OrderedDict()
    for key, value in state_dict.items():
        if not key.startswith(prefix) or not torch.is_tensor(value):
            continue
        plain_key = key[len(prefix):]
        if set(plain_key.split('.')) & set(EXTRA_SUBMODULES):
            continue
        plain[plain_key] = value
    if not plain:
        raise ExportError(f'{path}: the "{which}." keys hold no tensors.')
    return plain


def choose_network(checkpoint: dict) -> Tuple[str, str]:
    """The network ``--which auto`` exports, and why.

    Returns:
        tuple[str, str]: ``'teacher'`` or ``'student'``, and a sentence
        saying why.
    """
    hub = checkpoint.get('message_hub')
    info = hub.get('runtime_info', {}) if isinstance(hub, dict) else {}
    choice = info.get(BETTER_NETWORK_KEY)
    if not isinstance(choice, dict) or choice.get('network') not in NETWORKS:
        return 'teacher', ('the checkpoint records no validation of both '
                           'networks; the teacher is the network the paper '
                           'evaluates')
    metric = choice.get('metric', 'the metric')
    return choice['network'], (
        f'it validated better at iteration {choice.get("iter")}: {metric} '
        f'teacher {choice.get("teacher", float("nan")):.2f}, student '
        f'{choice.get("student", float("nan")):.2f}')


_DROP = object()


def _to_plain(value: Any) -> Any:
    """Recursively convert to types a weights-only load accepts.

    Returns ``_DROP`` for values that have no such form.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, 'item') and getattr(value, 'ndim', None) == 0:
        return value.item()  # numpy / torch scalars
    if isinstance(value, (list, tuple)):
        items = [_to_plain(v) for v in value]
        if any(v is _DROP for v in items):
            return _DROP
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = _to_plain(item)
            if isinstance(key, str) and item is not _DROP:
                out[key] = item
        return out
    return _DROP


def build_meta(checkpoint: dict, config_text: str, source: dict) -> dict:
    """Meta of the exported checkpoint.

    Keeps the source meta's plain entries (``dataset_meta``, versions,
    ``epoch``, ``iter``, ...), replaces ``cfg`` with the exported config and
    records where the weights came from.

    Args:
        checkpoint (dict): The source checkpoint.
        config_text (str): The exported config, as text.
        source (dict): ``checkpoint``, ``config`` and ``network`` exported.

    Returns:
        dict: The meta.
    """
    source_meta = checkpoint.get('meta') if 'state_dict' in checkpoint else {}
    meta = {
        key: value
        for key, value in _to_plain(source_meta or {}).items()
        if key not in DROPPED_META
    }
    meta['cfg'] = config_text
    meta['exported_from'] = dict(source)
    meta['export_time'] = time.strftime('%Y%m%d_%H%M%S', time.localtime())
    return meta


# --------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------
def _iter_types(node: Any) -> Iterator[Any]:
    """Yield every ``type`` value of the dicts nested in ``node``."""
    if isinstance(node, dict):
        if 'type' in node:
            yield node['type']
        for value in node.values():
            yield from _iter_types(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _iter_types(value)


def _is_ours(module_name: str) -> bool:
    return module_name == PACKAGE or module_name.startswith(PACKAGE + '.')


def _registered_module(type_name: Any) -> Optional[str]:
    """Module defining ``type_name`` in mmseg's registries, or None."""
    if not isinstance(type_name, str):
        return getattr(type_name, '__module__', None)
    import mmseg.registry as registries
    from mmengine.registry import Registry
    for registry in vars(registries).values():
        if not isinstance(registry, Registry):
            continue
        try:
            obj = registry.get(type_name)
        except Exception:  # unknown scope, failed lazy import, ...
            obj = None
        if obj is not None:
            return getattr(obj, '__module__', '') or ''
    return None


def is_plain_mmseg_type(type_name: Any) -> bool:
    """Whether plain mmseg (plus other custom imports) can build a type.

    A type is plain when a registry of mmseg (or its parents, mmengine and
    mmcv) resolves it to a class that is not defined in ``mmseg_u2pl``.

    Args:
        type_name (str | type): The ``type`` of a config dict.

    Returns:
        bool: True for a plain type.
    """
    module = _registered_module(type_name)
    return module is not None and not _is_ours(module)


def _split_custom_imports(cfg: dict) -> Tuple[List[str], List[str], bool]:
    """Our and other entries of ``custom_imports``, and its failure flag."""
    custom_imports = cfg.get('custom_imports') or {}
    imports = custom_imports.get('imports', [])
    if isinstance(imports, str):
        imports = [imports]
    ours = [name for name in imports if _is_ours(name)]
    others = [name for name in imports if not _is_ours(name)]
    return ours, others, bool(
        custom_imports.get('allow_failed_imports', False))


def _is_training_key(key: str) -> bool:
    """Top-level keys dropped: training, semi-supervised, train pipelines."""
    return (key in TRAINING_KEYS or key.startswith('semi_')
            or key == 'custom_imports'
            or (key.endswith('_pipeline') and key not in BUILT_KEYS))


def _plain_val_cfg(val_cfg: Optional[dict]) -> Optional[dict]:
    """``ValLoop`` instead of ``TeacherStudentValLoop``."""
    if not isinstance(val_cfg, dict):
        return val_cfg
    if str(val_cfg.get('type', '')).split('.')[-1] == 'TeacherStudentValLoop':
        plain = dict(type='ValLoop')
        if 'fp16' in val_cfg:
            plain['fp16'] = val_cfg['fp16']
        return plain
    return val_cfg


def _strip_network_prefix(key_indicator: Any) -> Any:
    """``'teacher/mIoU'`` -> ``'mIoU'`` (also in lists)."""
    if isinstance(key_indicator, str):
        head, sep, tail = key_indicator.partition('/')
        return tail if sep and head in NETWORKS else key_indicator
    if isinstance(key_indicator, (list, tuple)):
        return [_strip_network_prefix(k) for k in key_indicator]
    return key_indicator


def _plain_model(cfg: dict, config_path: str) -> dict:
    """``cfg.model.segmentor`` with a data preprocessor."""
    model = cfg.get('model')
    if not isinstance(model, dict):
        raise ExportError(f'{config_path}: the config has no "model" dict.')
    segmentor = model.get('segmentor')
    if not isinstance(segmentor, dict) or 'type' not in segmentor:
        raise ExportError(
            f'{config_path}: model (type={model.get("type")!r}) has no '
            '"segmentor" config with a "type". This tool exports mean-teacher '
            "configs such as model=dict(type='U2PL', segmentor=dict("
            "type='EncoderDecoder', ...)); a plain mmseg config needs no "
            'export.')
    segmentor = copy.deepcopy(segmentor)
    if segmentor.get('data_preprocessor') is None:
        fallback = cfg.get('data_preprocessor')
        if not (isinstance(fallback, dict) and str(fallback.get(
                'type', '')).split('.')[-1] == 'SegDataPreProcessor'):
            raise ExportError(
                f'{config_path}: model.segmentor has no data_preprocessor, '
                'so the exported model would not normalise its inputs. Add '
                "model.segmentor.data_preprocessor=dict(type="
                "'SegDataPreProcessor', mean=..., std=..., ...) to the "
                'config.')
        segmentor['data_preprocessor'] = copy.deepcopy(fallback)
    return segmentor


def _test_pipeline(cfg: dict) -> Optional[list]:
    """``test_pipeline``, or the pipeline of ``test_dataloader``."""
    if cfg.get('test_pipeline') is not None:
        return cfg['test_pipeline']
    for key in ('test_dataloader', 'val_dataloader'):
        dataset = (cfg.get(key) or {}).get('dataset') or {}
        if dataset.get('pipeline') is not None:
            return copy.deepcopy(dataset['pipeline'])
    return None


def plain_config(cfg: Config, config_path: str = 'config') -> Config:
    """A plain mmseg test/inference config from a mean-teacher config.

    Args:
        cfg (Config): The mean-teacher config (custom imports not needed).
        config_path (str): File name used in error messages.

    Returns:
        Config: The plain config.
    """
    source = cfg.to_dict()
    ours, others, allow_failed = _split_custom_imports(source)
    if others:
        from mmengine.utils import import_modules_from_strings
        import_modules_from_strings(others, allow_failed)
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)

    plain = {
        key: value
        for key, value in source.items() if not _is_training_key(key)
    }
    plain['model'] = _plain_model(source, config_path)
    plain['default_scope'] = 'mmseg'
    test_pipeline = _test_pipeline(source)
    if test_pipeline is not None:
        plain['test_pipeline'] = test_pipeline
    if 'val_cfg' in plain:
        plain['val_cfg'] = _plain_val_cfg(plain['val_cfg'])
    checkpoint_hook = (plain.get('default_hooks') or {}).get('checkpoint')
    if isinstance(checkpoint_hook, dict) and 'save_best' in checkpoint_hook:
        checkpoint_hook['save_best'] = _strip_network_prefix(
            checkpoint_hook['save_best'])
    if plain.get('custom_hooks'):
        plain['custom_hooks'] = [
            hook for hook in plain['custom_hooks']
            if is_plain_mmseg_type(hook.get('type'))
        ]
    if not plain.get('custom_hooks'):
        plain.pop('custom_hooks', None)
    # Helper variables that only describe semi-supervised parts (unlabeled
    # pipelines, the dataset wrapper, ...) are dropped.
    for key in [k for k in plain if k not in BUILT_KEYS]:
        if not all(is_plain_mmseg_type(t) for t in _iter_types(plain[key])):
            plain.pop(key)

    built = [plain[key] for key in BUILT_KEYS if key in plain]
    needs_ours = not all(is_plain_mmseg_type(t) for t in _iter_types(built))
    imports = others + ((ours or [PACKAGE]) if needs_ours else [])
    if imports:
        plain['custom_imports'] = dict(
            imports=imports, allow_failed_imports=allow_failed)
    return Config(plain)


# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------
def export_checkpoint(config: str,
                      checkpoint: str,
                      out_dir: str,
                      which: str = 'auto',
                      name: Optional[str] = None,
                      trust_checkpoint: bool = False) -> Tuple[str, str]:
    """Write ``OUT_DIR/NAME.pth`` and ``OUT_DIR/NAME.py``.

    Args:
        config (str): The mean-teacher config file.
        checkpoint (str): Its checkpoint.
        out_dir (str): Output folder, created if needed.
        which (str): ``'teacher'``, ``'student'`` or ``'auto'``, the one
            that validated better (:func:`choose_network`, printed).
            Defaults to 'auto'.
        name (str, optional): File name without extension. Defaults to
            ``<config name>_<which>`` (the network exported).
        trust_checkpoint (bool): Allow a full unpickle of the checkpoint if a
            safe load fails. Defaults to False.

    Returns:
        tuple[str, str]: The written checkpoint and config paths.
    """
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file "{config}" does not exist.')
    cfg = Config.fromfile(config, import_custom_modules=False)
    out_cfg = plain_config(cfg, config)

    loaded = load_checkpoint_file(checkpoint, trust=trust_checkpoint)
    if which == 'auto':
        which, reason = choose_network(loaded)
        print(f'Exporting the {which}: {reason}.')
    state_dict = extract_network(
        get_state_dict(loaded, checkpoint), which, checkpoint)

    name = name or f'{osp.splitext(osp.basename(config))[0]}_{which}'
    os.makedirs(out_dir, exist_ok=True)
    cfg_path = osp.join(out_dir, f'{name}.py')
    ckpt_path = osp.join(out_dir, f'{name}.pth')
    out_cfg.dump(cfg_path)
    with open(cfg_path, encoding='utf-8') as f:
        config_text = f.read()
    meta = build_meta(
        loaded, config_text,
        dict(
            config=osp.abspath(config),
            checkpoint=osp.abspath(checkpoint),
            network=which))
    torch.save(dict(meta=meta, state_dict=state_dict), ckpt_path)
    return ckpt_path, cfg_path


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export the teacher or student of a mean-teacher (U2PL) '
        'checkpoint as a plain MMSegmentation checkpoint and config.')
    parser.add_argument('config', help='mean-teacher config file')
    parser.add_argument('checkpoint', help='mean-teacher checkpoint file')
    parser.add_argument('out_dir', help='folder for NAME.pth and NAME.py')
    parser.add_argument(
        '--which',
        choices=('auto', ) + NETWORKS,
        default='auto',
        help='network to export (default: auto, the one that validated '
        'better at the checkpoint\'s last validation, else the teacher)')
    parser.add_argument(
        '--name',
        help='output file name without extension '
        '(default: <config name>_<network>)')
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='allow a full (unsafe) unpickle if the checkpoint holds objects '
        'a weights-only load refuses; only for files you trust')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    try:
        ckpt_path, cfg_path = export_checkpoint(args.config, args.checkpoint,
                                                args.out_dir, args.which,
                                                args.name,
                                                args.trust_checkpoint)
    except (ExportError, FileNotFoundError) as error:
        sys.exit(f'export_checkpoint.py: error: {error}')
    print(f'Exported:\n  checkpoint: {ckpt_path}\n  config:     {cfg_path}')


if __name__ == '__main__':
    main()
