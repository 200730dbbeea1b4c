# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""The representation (projection) branch of U2PL (paper Sec. 4.1).

The branch reads the feature map that a decode head feeds to its final
classifier and maps it to a per-pixel embedding ``z`` used by the
unreliable-pixel contrastive loss. :func:`forward_with_classifier_input`
runs any mmseg decode head and also returns the input of its classifier
(``conv_seg``, before the head's dropout; every ``BaseDecodeHead`` ends with
``cls_seg(feat)``); :class:`RepresentationHead` projects that map.
"""
from typing import List, Optional, Tuple

import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptConfigType
from torch import Tensor

from ..utils.random_stream import separate_random_stream


def forward_with_classifier_input(decode_head: nn.Module,
                                  inputs) -> Tuple[Tensor, Tensor]:
    """Run a decode head and capture the input of its classifier.

    The captured ``cls_feat`` is the tensor the head passed to ``cls_seg``,
    before dropout: the input of ``decode_head.dropout`` when the classifier
    ``conv_seg`` receives that dropout's output (the ``cls_seg`` path),
    else the input of ``conv_seg`` itself (no dropout, or a dropout used
    elsewhere in the head). It is not detached, so gradients of a loss on
    it reach the head and the backbone.

    Forward (pre-)hooks are used and always removed, also when the forward
    raises. The head is called through ``__call__`` (its own hooks run).

    Args:
        decode_head (nn.Module): An mmseg decode head with a ``conv_seg``
            classifier and, optionally, a ``dropout`` module applied just
            before it (the ``BaseDecodeHead.cls_seg`` convention).
        inputs (Tuple[Tensor]): Multi-level image features from the backbone
            (and neck), as passed to ``decode_head.forward``.

    Returns:
        Tuple[Tensor, Tensor]: ``(seg_logits, cls_feat)``: the head's output
        and the classifier input, ``(B, C_feat, H_feat, W_feat)``.

    Raises:
        TypeError: If the head has no ``conv_seg`` module.
        RuntimeError: If the forward did not call ``conv_seg`` exactly once.
    """
    conv_seg = getattr(decode_head, 'conv_seg', None)
    if not isinstance(conv_seg, nn.Module):
        raise TypeError(
            f'{type(decode_head).__name__} has no `conv_seg` module, but the '
            'representation branch reads the input of the decode head\'s '
            'classifier `conv_seg` (the mmseg BaseDecodeHead convention: '
            '`forward` ends with `cls_seg(feat)`). Use a head derived from '
            'BaseDecodeHead, or give yours a `conv_seg` classifier.')
    dropout = getattr(decode_head, 'dropout', None)
    if not isinstance(dropout, nn.Module):
        dropout = None

    # The last dropout call as (input, output). With a dropout the
    # classifier input is the dropout's (random) output: when the
    # classifier receives exactly that tensor, we keep the dropout's input.
    last_dropout: List[Optional[Tensor]] = [None, None]
    captured: List[Tensor] = []

    def _save_dropout_input(module: nn.Module, args: tuple) -> None:
        feat = args[0]
        # An in-place dropout would overwrite the tensor we keep.
        if getattr(module, 'inplace', False) and module.training:
            feat = feat.clone()
        last_dropout[0] = feat

    def _save_dropout_output(module: nn.Module, args: tuple,
                             output: Tensor) -> None:
        last_dropout[1] = output

    def _save_classifier_input(module: nn.Module, args: tuple) -> None:
        feat = args[0]
        if last_dropout[1] is not None and feat is last_dropout[1]:
            feat = last_dropout[0]
        captured.append(feat)

    handles = [conv_seg.register_forward_pre_hook(_save_classifier_input)]
    try:
        if dropout is not None:
            handles.append(
                dropout.register_forward_pre_hook(_save_dropout_input))
            handles.append(dropout.register_forward_hook(_save_dropout_output))
        seg_logits = decode_head(inputs)
    finally:
        for handle in handles:
            handle.remove()

    if len(captured) != 1:
        raise RuntimeError(
            f'{type(decode_head).__name__}.forward called its classifier '
            f'`conv_seg` {len(captured)} times; the representation branch '
            'needs exactly one call per forward to know which feature map '
            'feeds the classifier.')
    return seg_logits, captured[0]


def conv_bn_act_dropout(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    dropout_ratio: float = 0.1,
    conv_cfg: OptConfigType = None,
    norm_cfg: OptConfigType = dict(type='BN', requires_grad=True),
    act_cfg: OptConfigType = dict(type='ReLU')
) -> nn.Sequential:
    """One conv-norm-activation-dropout block ("same" padding).

    Shared by :class:`RepresentationHead` and the paper's DeepLabV3+
    classifier, whose blocks are identical.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int): Odd kernel size. Defaults to 3.
        dropout_ratio (float): ``nn.Dropout2d`` probability; no dropout
            layer when 0. Defaults to 0.1.
        conv_cfg (dict, optional): Conv layer config. Defaults to None.
        norm_cfg (dict, optional): Norm layer config.
            Defaults to ``dict(type='BN', requires_grad=True)``.
        act_cfg (dict, optional): Activation config.
            Defaults to ``dict(type='ReLU')``.

    Returns:
        nn.Sequential: ``ConvModule`` followed by ``nn.Dropout2d`` if any.
    """
    layers = [
        ConvModule(
            in_channels,
            out_channels,
            kernel_size,
            padding=kernel_size // 2,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg)
    ]
    if dropout_ratio > 0:
        layers.append(nn.Dropout2d(dropout_ratio))
    return nn.Sequential(*layers)


def check_block_args(owner: str, kernel_size: int,
                     dropout_ratio: float) -> None:
    """Validate the arguments of :func:`conv_bn_act_dropout`.

    Args:
        owner (str): Class name used in the error message.
        kernel_size (int): Must be a positive odd int.
        dropout_ratio (float): Must lie in ``[0, 1)``.
    """
    if not isinstance(kernel_size, int) or kernel_size < 1 \
            or kernel_size % 2 == 0:
        raise ValueError(
            f'{owner}: kernel_size must be a positive odd int (padding keeps '
            f'the resolution), got {kernel_size!r}.')
    if not 0 <= dropout_ratio < 1:
        raise ValueError(f'{owner}: dropout_ratio must be in [0, 1), got '
                         f'{dropout_ratio!r}.')


@MODELS.register_module()
class RepresentationHead(BaseModule):
    """Projection head mapping classifier features to representations ``z``.

    ``num_convs`` blocks of conv-BN-ReLU-Dropout2d (``in_channels`` ->
    ``channels`` -> ... -> ``channels``) followed by a 1x1 conv (with bias)
    to ``out_channels``. The output keeps the input resolution and is not
    normalised (the contrastive loss uses cosine similarity). With the
    defaults and ``in_channels=512`` this is the paper's head:
    512 -> 256 -> 256 -> 256.

    Its input is the decode head's classifier input, obtained with
    :func:`forward_with_classifier_input`; ``in_channels`` must match it
    (512 for :class:`DeepLabV3PlusHead`, ``decode_head.channels`` for stock
    mmseg heads).

    Example config (inside the U2PL segmentor)::

        representation_head=dict(
            type='RepresentationHead',
            in_channels=512,
            channels=256,
            out_channels=256,
            num_convs=2,
            dropout_ratio=0.1,
            norm_cfg=dict(type='SyncBN', requires_grad=True))

    Args:
        in_channels (int): Channels of the classifier input.
        channels (int): Channels of the hidden conv blocks. Defaults to 256.
        out_channels (int): Representation dimension. Defaults to 256.
        num_convs (int): Number of conv blocks before the 1x1 projection;
            0 gives a single 1x1 conv. Defaults to 2.
        kernel_size (int): Kernel size of the conv blocks. Defaults to 3.
        dropout_ratio (float): ``nn.Dropout2d`` ratio after each block.
            Defaults to 0.1.
        conv_cfg (dict, optional): Conv layer config. Defaults to None.
        norm_cfg (dict, optional): Norm layer config.
            Defaults to ``dict(type='BN', requires_grad=True)``.
        act_cfg (dict, optional): Activation config.
            Defaults to ``dict(type='ReLU')``.
        init_cfg (dict or list[dict], optional): Initialization config.
            Defaults to None (conv blocks: mmcv ``ConvModule`` init).
    """

    def __init__(self,
                 in_channels: int,
                 channels: int = 256,
                 out_channels: int = 256,
                 num_convs: int = 2,
                 kernel_size: int = 3,
                 dropout_ratio: float = 0.1,
                 conv_cfg: OptConfigType = None,
                 norm_cfg: OptConfigType = dict(type='BN', requires_grad=True),
                 act_cfg: ConfigType = dict(type='ReLU'),
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        for key, value in (('in_channels', in_channels),
                           ('channels', channels), ('out_channels',
                                                    out_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'RepresentationHead: {key} must be a '
                                 f'positive int, got {value!r}.')
        if not isinstance(num_convs, int) or num_convs < 0:
            raise ValueError('RepresentationHead: num_convs must be an int '
                             f'>= 0, got {num_convs!r}.')
        check_block_args('RepresentationHead', kernel_size, dropout_ratio)
        self.in_channels = in_channels
        self.channels = channels
        self.out_channels = out_channels
        self.num_convs = num_convs
        self.dropout_ratio = dropout_ratio

        blocks = []
        for i in range(num_convs):
            blocks.append(
                conv_bn_act_dropout(
                    in_channels if i == 0 else channels,
                    channels,
                    kernel_size,
                    dropout_ratio=dropout_ratio,
                    conv_cfg=conv_cfg,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg))
        self.convs = nn.Sequential(*blocks)
        self.conv_rep = nn.Conv2d(
            channels if num_convs > 0 else in_channels,
            out_channels,
            kernel_size=1,
            bias=True)

    def init_weights(self) -> None:
        """Initialise, drawing from a random stream of its own.

        Adding the head to a model then leaves every other random draw of
        the run as it was (see :func:`separate_random_stream`).
        """
        with separate_random_stream('representation_head.init_weights'):
            super().init_weights()

    def forward(self, cls_feat: Tensor) -> Tensor:
        """Project classifier features to representations.

        Args:
            cls_feat (Tensor): ``(B, in_channels, H, W)``.

        Returns:
            Tensor: ``z`` of shape ``(B, out_channels, H, W)``, unnormalised.
        """
        if cls_feat.dim() != 4 or cls_feat.shape[1] != self.in_channels:
            raise ValueError(
                'RepresentationHead expects (B, in_channels=' +
                f'{self.in_channels}, H, W) features, got shape '
                f'{tuple(cls_feat.shape)}; set `in_channels` of '
                'representation_head to the channels of the decode head\'s '
                'classifier input.')
        return self.conv_rep(self.convs(cls_feat))


def classifier_in_channels(decode_head: nn.Module) -> int:
    """Channels of the feature map a decode head feeds to its classifier."""
    for module in decode_head.conv_seg.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise ValueError(f'Cannot infer the classifier input channels of '
                     f'{type(decode_head).__name__}; set '
                     'model.representation_head.in_channels.')
