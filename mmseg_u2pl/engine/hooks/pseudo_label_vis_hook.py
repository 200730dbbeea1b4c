# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Save image / pseudo-label / entropy / reliable-mask panels in training."""
from typing import Optional, Sequence

import numpy as np
import torch
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from ...utils import unwrap_model


@HOOKS.register_module()
class PseudoLabelVisualizationHook(Hook):
    """Visualise what the unsupervised loss sees, every ``interval`` iters.

    For the first ``num_images`` mixed unlabeled images of the batch it draws
    one row: the (CutMix-ed) image, the teacher's pseudo-label, its entropy
    (dark = confident) and the reliable mask (white = used by the
    unsupervised loss, black = unreliable, grey = padding). The panel goes to
    every configured ``vis_backends`` through the runner's visualizer
    (``LocalVisBackend`` writes it under the work dir, TensorBoard/W&B
    backends log it as an image).

    Args:
        interval (int): Draw every ``interval`` training iterations.
            Defaults to 500.
        num_images (int): Rows per panel. Defaults to 4.
        name (str): Image name in the backends. Defaults to 'pseudo_labels'.

    Example:
        >>> custom_hooks = [
        ...     dict(type='MeanTeacherHook', warmup_iters=200),
        ...     dict(type='PseudoLabelVisualizationHook', interval=500)]
    """

    priority = 'LOW'

    def __init__(self,
                 interval: int = 500,
                 num_images: int = 4,
                 name: str = 'pseudo_labels') -> None:
        if interval <= 0 or num_images <= 0:
            raise ValueError('PseudoLabelVisualizationHook: interval and '
                             'num_images must be positive, got '
                             f'{interval} and {num_images}')
        self.interval = interval
        self.num_images = num_images
        self.name = name

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        """Draw the model's ``last_pseudo_labels`` every ``interval``."""
        if not self.every_n_train_iters(runner, self.interval):
            return
        model = unwrap_model(runner.model)
        record = getattr(model, 'last_pseudo_labels', None)
        if not record:
            return
        record = {k: v[:self.num_images] for k, v in record.items()}
        palette = runner.visualizer.dataset_meta.get('palette') \
            if runner.visualizer.dataset_meta else None
        panel = draw_pseudo_label_panel(record, model.data_preprocessor,
                                        palette)
        runner.visualizer.add_image(self.name, panel, step=runner.iter + 1)


def _denormalise(inputs: torch.Tensor, data_preprocessor) -> np.ndarray:
    pre = getattr(data_preprocessor, 'seg_preprocessor', data_preprocessor)
    img = inputs.float()
    if getattr(pre, '_enable_normalize', False):
        img = img * pre.std + pre.mean
    # round, not truncate: x * std + mean may land just below an integer
    return img.round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()


def _colourise(labels: np.ndarray, palette: Optional[Sequence]) -> np.ndarray:
    num = int(labels.max()) + 1 if labels.size else 1
    if palette is None or len(palette) < num:
        rng = np.random.default_rng(0)
        palette = rng.integers(0, 255, size=(max(num, 256), 3))
    colours = np.asarray(palette, dtype=np.uint8)
    return colours[labels]


def draw_pseudo_label_panel(record: dict,
                            data_preprocessor,
                            palette: Optional[Sequence] = None) -> np.ndarray:
    """Rows of image | pseudo-label | entropy | reliable mask (RGB uint8)."""
    import matplotlib
    images = _denormalise(record['inputs'], data_preprocessor)
    pseudo = _colourise(record['pseudo_label'].cpu().numpy(), palette)
    ent = record['entropy'].float().cpu().numpy()
    ent = ent / max(float(ent.max()), 1e-6)
    ent_rgb = (matplotlib.colormaps['viridis'](ent)[..., :3] * 255).astype(
        np.uint8)
    reliable = record['reliable_mask'].cpu().numpy()
    valid = record['valid_mask'].cpu().numpy()
    mask_rgb = np.where(reliable, 255,
                        np.where(valid, 0, 128)).astype(np.uint8)[...,
                                                                  None].repeat(
                                                                      3,
                                                                      axis=-1)
    rows = []
    for i in range(images.shape[0]):
        if images.shape[-1] == 1:
            image = images[i].repeat(3, axis=-1)
        else:
            image = images[i][..., :3]
        rows.append(
            np.concatenate([image, pseudo[i], ent_rgb[i], mask_rgb[i]],
                           axis=1))
    return np.concatenate(rows, axis=0)
