# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Helpers shared by the step-time and memory benchmarks.

A U2PL config is turned into the three networks that are compared (the
full U2PL segmentor, U2PL without the contrastive term, the supervised
student alone), each with its optimizer wrapper and a synthetic batch of
the dataloader's layout (:func:`mmseg_u2pl.utils.fake_data.
fake_packed_batch`), so that one training iteration can be run without any
dataset on disk.

It also reads the memory of this process (current and peak resident set
size) for the memory benchmark and the soak test, and puts the repository
and ``tools/dataset_converters`` on ``sys.path`` for every analysis tool
that imports it.

Example::

    cfg = load_bench_config('configs/u2pl/u2pl_..._toy-1-16-64x64.py',
                            device, crop=64)
    model = build_variant(cfg, 'u2pl', device)
    wrapper = build_bench_optim_wrapper(cfg, model, device, amp=False)
    batch = fake_batch('u2pl', cfg, num_labeled=4, crop=64)
    model.train_step(batch, wrapper)
"""
import copy
import os.path as osp
import resource
import sys
from typing import Optional, Tuple

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# The analysis tools import from the repository (``mmseg_u2pl``) and from
# the dataset tools' helper modules (``split_utils``, ``toy_shapes21``).
for _path in (ROOT, osp.join(ROOT, 'tools', 'dataset_converters')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

MIB = 2**20

#: full U2PL on the toy dataset: the default config of the per-step tools
TOY_U2PL_CONFIG = ('configs/u2pl/'
                   'u2pl_deeplabv3plus_r18-d8_1xb4+4-2k_toy-1-16-64x64.py')
#: the paper's per-GPU sizes: VOC 513 crops, 4 + 4 images (ResNet-101)
VOC_U2PL_CONFIG = (
    'configs/voc/'
    'u2pl_deeplabv3plus_r101-d8_4xb4+4-80e_voc-classic-1464-513x513.py')
#: and Cityscapes 769 crops, 2 + 2 images
CITYSCAPES_U2PL_CONFIG = (
    'configs/cityscapes/'
    'u2pl_deeplabv3plus_r101-d8_8xb2+2-200e_cityscapes-744-769x769.py')

#: What each variant trains on per iteration (``B_l`` labeled and ``B_u``
#: unlabeled images, ``B_u == B_l``).
VARIANTS = {
    'supervised': 'the student alone on the B_l labeled images',
    'supervised-x2': 'the student alone on B_l + B_u labeled images',
    'u2pl-nocontrast': 'U2PL without the contrastive term (B_l + B_u)',
    'u2pl': 'full U2PL as the config sets it (B_l + B_u)',
    'u2pl-two-passes': 'full U2PL, a second teacher forward on the mixed '
    'batch for the contrastive targets (reuse_teacher_forward=False)',
    'u2pl-reuse': 'full U2PL, one teacher forward (reuse_teacher_forward)',
}


def resolve_device(name: Optional[str] = None) -> torch.device:
    """``name`` (e.g. ``'cpu'``, ``'cuda:1'``), else CUDA when available,
    else the CPU."""
    return torch.device(
        name or ('cuda' if torch.cuda.is_available() else 'cpu'))


def add_step_arguments(parser) -> None:
    """``--config`` (the toy U2PL config), ``--crop`` (64), ``--batch`` (4)
    and ``--device`` (:func:`resolve_device`) of the tools that run one
    training step on a synthetic batch."""
    parser.add_argument('--config', default=TOY_U2PL_CONFIG)
    parser.add_argument('--crop', type=int, default=64)
    parser.add_argument(
        '--batch',
        type=int,
        default=4,
        help='labeled (= unlabeled) images per iteration')
    parser.add_argument('--device', default=None)


def resolve_config(config: str) -> str:
    """An existing config path, relative to the repository root or not.

    Raises:
        FileNotFoundError: Naming the path when neither exists.
    """
    for path in (config, osp.join(ROOT, config)):
        if osp.isfile(path):
            return path
    raise FileNotFoundError(
        f'Config file {config!r} does not exist (also looked in {ROOT}): '
        'give a path such as configs/u2pl/<name>.py.')


def load_bench_config(config: str,
                      device: torch.device,
                      crop: Optional[int] = None):
    """Load a U2PL config for a benchmark without data or pretrained weights.

    Registers this package's modules and sets mmseg's default scope. Without
    CUDA, SyncBN becomes BN. Backbone ``init_cfg`` is dropped (benchmarks
    need no pretrained weights). ``crop`` overrides the student's data
    preprocessor size.

    Args:
        config (str): A U2PL config (``model.type='U2PL'``).
        device (torch.device): Where the benchmark runs.
        crop (int, optional): Square crop size. None keeps the config's.

    Returns:
        Config: The loaded config.
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmseg_u2pl  # noqa: F401  (registers our modules)
    from mmseg_u2pl.utils.launch import convert_sync_bn
    init_default_scope('mmseg')
    path = resolve_config(config)
    cfg = Config.fromfile(path)
    check_u2pl_config(cfg)
    if device.type != 'cuda':
        convert_sync_bn(cfg.model)
    segmentor = cfg.model.segmentor
    segmentor['init_cfg'] = None
    if segmentor.get('pretrained') is not None:
        segmentor['pretrained'] = None
    segmentor.backbone['init_cfg'] = None
    if crop is not None:
        segmentor.data_preprocessor['size'] = (crop, crop)
    return cfg


def check_u2pl_config(cfg) -> None:
    """Raise, naming the file, unless ``cfg`` is a U2PL config."""
    if cfg.model.get('type') != 'U2PL' or 'segmentor' not in cfg.model:
        raise ValueError(
            f'{cfg.filename}: model.type is {cfg.model.get("type")!r}; the '
            'benchmarks need a U2PL config (model.type="U2PL" with a '
            'model.segmentor), e.g. one from configs/u2pl or configs/voc.')


def config_batch_and_crop(cfg) -> Tuple[int, int]:
    """Per-GPU labeled batch ``B_l`` and crop size a config trains with.

    The batch is ``train_dataloader.batch_size``; the crop is the student's
    ``data_preprocessor.size`` (the size every batch is padded to).

    Raises:
        KeyError: Naming the missing key.
    """
    check_u2pl_config(cfg)
    try:
        batch = int(cfg.train_dataloader.batch_size)
    except (AttributeError, KeyError):
        raise KeyError(f'{cfg.filename}: train_dataloader.batch_size is '
                       'missing; pass the batch size explicitly.')
    size = cfg.model.segmentor.get('data_preprocessor', {}).get('size')
    if not size:
        raise KeyError(f'{cfg.filename}: model.segmentor.data_preprocessor.'
                       'size is missing; pass the crop size explicitly.')
    if size[0] != size[1]:
        raise ValueError(f'{cfg.filename}: the benchmarks use square '
                         f'crops, got data_preprocessor.size={size}.')
    return batch, int(size[0])


def build_variant(cfg, variant: str, device: torch.device):
    """Build one benchmarked network in training mode on ``device``.

    ``u2pl`` is the config's model, ``u2pl-nocontrast`` the same without the
    representation head and contrastive loss, ``supervised`` and
    ``supervised-x2`` the student segmentor alone. The semi-supervised
    variants are set past their warm-up, with CutMix on every batch (the
    most a step can cost).

    Args:
        cfg (Config): From :func:`load_bench_config`.
        variant (str): A key of :data:`VARIANTS`.
        device (torch.device): Target device.

    Returns:
        nn.Module: The model.
    """
    from mmseg.registry import MODELS
    if variant not in VARIANTS:
        raise KeyError(f'Unknown variant {variant!r}; choose from '
                       f'{list(VARIANTS)}.')
    if variant.startswith('supervised'):
        model_cfg = copy.deepcopy(cfg.model.segmentor)
    else:
        model_cfg = copy.deepcopy(cfg.model)
        if variant == 'u2pl-nocontrast':
            model_cfg.pop('contrastive_loss', None)
            model_cfg.pop('representation_head', None)
        elif variant in ('u2pl-reuse', 'u2pl-two-passes'):
            model_cfg.setdefault('semi_train_cfg', {})
            model_cfg.semi_train_cfg['reuse_teacher_forward'] = \
                variant == 'u2pl-reuse'
    model = MODELS.build(model_cfg).to(device)
    model.train()
    if not variant.startswith('supervised'):
        set_train_progress()  # past a zero warm-up: semi-supervised steps
        model.semi_train_cfg['cutmix']['prob'] = 1.0  # always pay for it
    return model


def build_bench_optim_wrapper(cfg, model, device: torch.device, amp: bool):
    """The config's optimizer wrapper, switched to mixed precision on demand.

    AMP uses ``AmpOptimWrapper`` (float16) on CUDA and
    ``CPUAmpOptimWrapper`` (bfloat16) elsewhere, as ``tools/train.py --amp``.
    """
    from mmengine.optim import build_optim_wrapper
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    if amp:
        optim_cfg['type'] = 'AmpOptimWrapper' if device.type == 'cuda' \
            else 'CPUAmpOptimWrapper'
        if device.type == 'cuda':
            optim_cfg['dtype'] = 'float16'
        optim_cfg['loss_scale'] = 'dynamic'
    return build_optim_wrapper(model, optim_cfg)


def num_classes_of(cfg) -> int:
    """Classes of the student's decode head."""
    return int(cfg.model.segmentor.decode_head.num_classes)


def fake_batch(variant: str, cfg, num_labeled: int, crop: int) -> dict:
    """A synthetic collated batch of the layout ``variant`` trains on.

    Args:
        variant (str): A key of :data:`VARIANTS`.
        cfg (Config): Gives the number of classes.
        num_labeled (int): ``B_l`` (``B_u`` is the same).
        crop (int): Image size.

    Returns:
        dict: A plain batch (``supervised*``) or
        ``{'labeled': ..., 'unlabeled': ...}``.
    """
    from mmseg_u2pl.utils.fake_data import fake_packed_batch
    num_classes = num_classes_of(cfg)
    if variant == 'supervised':
        return fake_packed_batch(num_labeled, crop, num_classes)
    if variant == 'supervised-x2':
        return fake_packed_batch(2 * num_labeled, crop, num_classes)
    return dict(
        labeled=fake_packed_batch(num_labeled, crop, num_classes),
        unlabeled=fake_packed_batch(
            num_labeled, crop, num_classes, with_label=False))


def set_train_progress(cur_iter: int = 1, max_iters: int = 100) -> None:
    """Record what mmengine's RuntimeInfoHook (the iteration) and
    MeanTeacherHook (a warm-up of 0 iterations) give a training model."""
    from mmengine.logging import MessageHub

    from mmseg_u2pl.utils import WARMUP_ITERS_KEY
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', cur_iter)
    hub.update_info('max_iters', max_iters)
    hub.update_info(WARMUP_ITERS_KEY, 0)


def add_allocator_argument(parser) -> None:
    """``--default-malloc``: the opt-out of :func:`use_training_allocator`."""
    parser.add_argument(
        '--default-malloc',
        action='store_true',
        help="on the CPU, keep glibc's default allocator instead of "
        'keep_freed_cpu_memory() (what tools/train.py sets on the CPU)')


def use_training_allocator(device: torch.device,
                           default_malloc: bool = False) -> bool:
    """On the CPU, allocate as ``tools/train.py`` does there.

    That is :func:`mmseg_u2pl.utils.keep_freed_cpu_memory`, unless
    ``default_malloc``; a benchmark so measures what training costs.

    Returns:
        bool: Whether freed memory is now kept for reuse.
    """
    if device.type != 'cpu' or default_malloc:
        return False
    from mmseg_u2pl.utils import keep_freed_cpu_memory
    return keep_freed_cpu_memory()


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def markdown_table(header: Tuple[str, ...], rows) -> str:
    """A Markdown table (no trailing newline)."""
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += [
        '| ' + ' | '.join(str(cell) for cell in row) + ' |' for row in rows
    ]
    return '\n'.join(lines)


# memory of this process (CPU)
def _proc_status_kib(field: str) -> Optional[int]:
    """A ``kB`` field of ``/proc/self/status`` (None where unavailable)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_mib() -> float:
    """Resident set size of this process now, in MiB."""
    kib = _proc_status_kib('VmRSS')
    if kib is not None:
        return kib / 1024
    try:
        import psutil
        return psutil.Process().memory_info().rss / MIB
    except ImportError:  # no better source: the peak so far
        return peak_rss_mib()


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux); False where impossible."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident set size (since start or the last reset), in MiB."""
    kib = _proc_status_kib('VmHWM')
    if kib is not None:
        return kib / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return peak / MIB if sys.platform == 'darwin' else peak / 1024
