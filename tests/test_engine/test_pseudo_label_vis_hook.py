# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""``PseudoLabelVisualizationHook`` and its panel."""
import glob
import os.path as osp
import uuid
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch
from mmengine.runner import Runner
from PIL import Image
from toy_fixtures import one_thread, toy_data_root  # noqa: F401  (fixtures)
from toy_fixtures import (U2PL_NOCONTRAST_CONFIG, toy_runner_cfg,
                          toy_train_cfg_options)

from mmseg_u2pl.datasets.toy_dataset import TOY_PALETTE as PALETTE
from mmseg_u2pl.engine.hooks.pseudo_label_vis_hook import (
    PseudoLabelVisualizationHook, draw_pseudo_label_panel)
from mmseg_u2pl.models.data_preprocessor import SemiSegDataPreProcessor

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
H, W = 4, 5


def hand_record():
    """Two 4x5 images with known pixels, labels, entropy and masks."""
    raw = torch.zeros(2, 3, H, W)
    raw[0, :, 1, 2] = torch.tensor([10., 200., 77.])  # RGB
    raw[1, :, 3, 4] = torch.tensor([255., 0., 128.])
    normalised = (raw - torch.tensor(MEAN).view(
        1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    pseudo = torch.zeros(2, H, W, dtype=torch.long)
    pseudo[0, 0, 0] = 2
    pseudo[1, 2, 3] = 5
    entropy = torch.full((2, H, W), 0.5)
    entropy[0, 0, 1] = 0.
    entropy[1, 1, 1] = 2.  # the maximum
    valid = torch.ones(2, H, W, dtype=torch.bool)
    valid[1, :, 4] = False  # padding column
    reliable = valid.clone()
    reliable[0, 3, 0] = False  # unreliable
    return raw, dict(
        inputs=normalised,
        pseudo_label=pseudo,
        entropy=entropy,
        reliable_mask=reliable,
        valid_mask=valid)


def test_panel_layout_and_pixels():
    raw, record = hand_record()
    pre = SemiSegDataPreProcessor(mean=MEAN, std=STD, bgr_to_rgb=True)
    panel = draw_pseudo_label_panel(record, pre, PALETTE)
    assert panel.dtype == np.uint8
    assert panel.shape == (2 * H, 4 * W, 3)
    # column 0: the image, denormalised (RGB)
    assert panel[1, 2].tolist() == [10, 200, 77]
    assert panel[H + 3, 4].tolist() == [255, 0, 128]
    assert panel[0, 0].tolist() == [0, 0, 0]
    # column 1: palette colours of the pseudo-labels
    assert panel[0, W + 0].tolist() == PALETTE[2]
    assert panel[0, W + 1].tolist() == PALETTE[0]
    assert panel[H + 2, W + 3].tolist() == PALETTE[5]
    # column 2: entropy / max entropy through viridis
    viridis = matplotlib.colormaps['viridis']

    def colour(x):
        return (np.asarray(viridis(x)[:3]) * 255).astype(np.uint8).tolist()

    assert panel[0, 2 * W + 1].tolist() == colour(0.)
    assert panel[H + 1, 2 * W + 1].tolist() == colour(1.)
    assert panel[0, 2 * W + 0].tolist() == colour(0.25)
    # column 3: white = reliable, black = unreliable, grey = padding
    assert panel[0, 3 * W + 0].tolist() == [255, 255, 255]
    assert panel[3, 3 * W + 0].tolist() == [0, 0, 0]
    assert panel[H + 0, 3 * W + 4].tolist() == [128, 128, 128]
    assert panel[H + 0, 3 * W + 3].tolist() == [255, 255, 255]


def test_every_pixel_value_survives_normalisation_and_back():
    """The image column shows exactly the loaded pixels (no off-by-one)."""
    pre = SemiSegDataPreProcessor(mean=MEAN, std=STD, bgr_to_rgb=True)
    values = torch.arange(256, dtype=torch.uint8).view(16, 16)
    bgr = torch.stack([values, values.flip(0), values.t()])
    inputs = pre(dict(inputs=[bgr], data_samples=None), False)['inputs']
    zeros = torch.zeros(1, 16, 16)
    record = dict(
        inputs=inputs,
        pseudo_label=zeros.long(),
        entropy=zeros,
        reliable_mask=zeros.bool(),
        valid_mask=zeros.bool())
    panel = draw_pseudo_label_panel(record, pre, PALETTE)
    rgb = bgr.flip(0).permute(1, 2, 0).numpy()
    assert np.array_equal(panel[:, :16], rgb)


def test_panel_without_normalisation_or_palette():
    raw, record = hand_record()
    record['inputs'] = raw  # a preprocessor that does not normalise
    pre = SemiSegDataPreProcessor()
    panel = draw_pseudo_label_panel(record, pre, None)
    assert panel[1, 2].tolist() == [10, 200, 77]
    # a fixed random palette: the same label, the same colour
    assert panel[0, W + 1].tolist() == panel[0, W + 2].tolist()
    assert panel[0, W + 0].tolist() != panel[0, W + 1].tolist()
    again = draw_pseudo_label_panel(record, pre, None)
    assert np.array_equal(panel, again)


def test_bad_arguments():
    with pytest.raises(ValueError, match='interval'):
        PseudoLabelVisualizationHook(interval=0)
    with pytest.raises(ValueError, match='num_images'):
        PseudoLabelVisualizationHook(num_images=0)


def test_hook_draws_the_first_images_every_interval():
    hook = PseudoLabelVisualizationHook(interval=3, num_images=1)
    _, record = hand_record()
    model = SimpleNamespace(
        last_pseudo_labels=record,
        data_preprocessor=SemiSegDataPreProcessor(mean=MEAN, std=STD))
    drawn = []
    visualizer = SimpleNamespace(
        dataset_meta=None,
        add_image=lambda name, image, step: drawn.append((name, image, step)))
    for cur_iter in range(7):
        runner = SimpleNamespace(iter=cur_iter, model=model,
                                 visualizer=visualizer)
        hook.after_train_iter(runner, 0)
    # every_n_train_iters: iterations 3 and 6 (1-based)
    assert [step for _, _, step in drawn] == [3, 6]
    # one row (num_images=1) of the first image: 4 panels of H x W
    assert drawn[0][1].shape == (H, 4 * W, 3)
    assert drawn[0][1][1, 2].tolist() == [10, 200, 77]
    # a model without a record is left alone
    hook.after_train_iter(
        SimpleNamespace(iter=2, model=SimpleNamespace(), visualizer=None), 0)


@pytest.mark.usefixtures('one_thread')
def test_short_training_saves_the_panel(toy_data_root, tmp_path):  # noqa
    options = toy_train_cfg_options(
        toy_data_root, max_iters=3, val_interval=100, warmup_iters=1)
    options.update({
        'custom_hooks.1.interval': 1,
        'custom_hooks.1.num_images': 2,
        'train_dataloader.batch_size': 2,
        'default_hooks.checkpoint.interval': 100,
        'default_hooks.checkpoint.save_last': False,
    })
    work_dir = str(tmp_path / f'vis_{uuid.uuid4().hex[:8]}')
    cfg = toy_runner_cfg(U2PL_NOCONTRAST_CONFIG, work_dir, options)
    runner = Runner.from_cfg(cfg)
    runner.train()
    images = sorted(
        glob.glob(
            osp.join(work_dir, '*', 'vis_data', 'vis_image',
                     'pseudo_labels_*.png')))
    names = [osp.basename(path) for path in images]
    # iteration 1 is the warm-up (no pseudo-labels); 2 and 3 are drawn
    assert names == ['pseudo_labels_2.png', 'pseudo_labels_3.png']
    panel = np.array(Image.open(images[-1]).convert('RGB'))
    assert panel.shape == (2 * 32, 4 * 32, 3)
    # pseudo-labels in the toy palette, masks in white/black/grey
    pseudo = panel[:, 32:64].reshape(-1, 3)
    assert {tuple(c) for c in pseudo} <= {tuple(c) for c in PALETTE}
    mask = panel[:, 96:128]
    assert set(np.unique(mask).tolist()) <= {0, 128, 255}
    assert (mask[..., 0] == mask[..., 1]).all()
    assert (mask == 255).any()  # some reliable pixels
