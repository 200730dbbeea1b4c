# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""The DeepLabV3+ decoder of the U2PL paper (paper Sec. 4.1).

It differs from mmseg's ``DepthwiseSeparableASPPHead`` in three ways: plain
(not depthwise-separable) 3x3 convs, a dropout after the ASPP fuse conv, and
a classifier of two conv-BN-ReLU-dropout blocks plus a 1x1 conv that reads
the 512-channel stride-4 fused features. That classifier *is* ``conv_seg``
and the base class's dropout is disabled, so the generic representation
rule ("read the input of ``conv_seg``") yields exactly the paper's fused
features for this head.
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import Sequential
from mmseg.models.decode_heads.aspp_head import ASPPModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import OptConfigType
from torch import Tensor

from .representation_head import check_block_args, conv_bn_act_dropout


@MODELS.register_module()
class DeepLabV3PlusHead(BaseDecodeHead):
    """DeepLabV3+ decoder as used by U2PL.

    * ASPP on the high-level features: an image-pooling branch, a 1x1 branch
      and one 3x3 branch per rate in ``dilations``, ``channels`` each;
      concatenated and fused by a 3x3 conv-BN-ReLU to ``channels`` and a
      ``Dropout2d(dropout_ratio)``.
    * Low-level branch: 1x1 conv-BN-ReLU ``c1_in_channels`` ->
      ``c1_channels`` on stage-1 features (stride 4).
    * The ASPP output is resized to the low-level resolution and
      concatenated after the low-level features (the reference order),
      giving ``c1_channels + channels`` (512) fused channels.
    * Classifier ``conv_seg``: two conv-BN-ReLU-Dropout2d blocks
      (512 -> ``classifier_channels`` -> ``classifier_channels``) and a 1x1
      conv to ``num_classes``. ``BaseDecodeHead``'s own dropout is
      disabled (``self.dropout = None``), so ``cls_seg`` is ``conv_seg``
      and the classifier input is the fused feature map.

    Inputs follow mmseg's ``input_transform='multiple_select'`` convention:
    ``in_index=(0, 3)`` selects (low-level, high-level) backbone outputs,
    low-level first.

    The final 1x1 conv is initialised with ``Normal(std=0.01)`` like
    ``conv_seg`` of mmseg heads (through ``conv_seg``'s own ``init_cfg``);
    conv blocks use mmcv ``ConvModule``'s initialisation.

    Example (the paper's decoder; the whole network, ResNetV1c-101 with a
    128-channel deep stem at output stride 8, is
    ``configs/_base_/models/paper_deeplabv3plus_r101-d8.py``)::

        decode_head = dict(
            type='DeepLabV3PlusHead', in_channels=2048, c1_in_channels=256,
            c1_channels=256, channels=256, classifier_channels=256,
            dilations=(12, 24, 36), in_index=(0, 3), dropout_ratio=0.1,
            num_classes=21, norm_cfg=dict(type='SyncBN', requires_grad=True),
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0))

    Args:
        in_channels (int): Channels of the high-level (ASPP) input, e.g.
            2048 for ResNet-101.
        c1_in_channels (int): Channels of the low-level input, e.g. 256.
        c1_channels (int): Channels of the reduced low-level features.
            Defaults to 256.
        dilations (Sequence[int]): Rates of the 3x3 ASPP branches (the 1x1
            and image-pooling branches are always present).
            Defaults to (12, 24, 36).
        classifier_channels (int): Channels of the classifier's conv blocks.
            Defaults to 256.
        classifier_kernel_size (int): Kernel size of those blocks.
            Defaults to 3.
        num_classifier_convs (int): Number of those blocks. Defaults to 2.
        in_index (Sequence[int]): Indices of the (low-level, high-level)
            backbone outputs. Defaults to (0, 3).
        input_transform (str): Must be ``'multiple_select'``.
        init_cfg (dict or list[dict], optional): Initialization config of
            the whole head, applied before ``conv_seg``'s own one. Do not
            put a ``Normal`` override on ``conv_seg`` here: it would also
            hit the classifier's BN layers. Defaults to None.
        **kwargs: ``channels``, ``num_classes``, ``dropout_ratio`` (ASPP
            fuse dropout and classifier dropouts), ``conv_cfg``,
            ``norm_cfg``, ``act_cfg``, ``align_corners``, ``loss_decode``,
            ``ignore_index``, ``sampler``... of :class:`BaseDecodeHead`.
    """

    def __init__(self,
                 in_channels: int,
                 c1_in_channels: int,
                 c1_channels: int = 256,
                 dilations: Sequence[int] = (12, 24, 36),
                 classifier_channels: int = 256,
                 classifier_kernel_size: int = 3,
                 num_classifier_convs: int = 2,
                 in_index: Sequence[int] = (0, 3),
                 input_transform: str = 'multiple_select',
                 init_cfg: OptConfigType = None,
                 **kwargs) -> None:
        self._check_args(in_channels, c1_in_channels, c1_channels, dilations,
                         classifier_channels, num_classifier_convs, in_index,
                         input_transform)
        super().__init__(
            in_channels=[c1_in_channels, in_channels],
            in_index=list(in_index),
            input_transform=input_transform,
            init_cfg=init_cfg,
            **kwargs)
        check_block_args(
            type(self).__name__, classifier_kernel_size, self.dropout_ratio)
        self.aspp_in_channels = in_channels
        self.c1_in_channels = c1_in_channels
        self.c1_channels = c1_channels
        self.dilations = tuple(dilations)
        self.classifier_channels = classifier_channels
        self.fused_channels = c1_channels + self.channels

        self._build_aspp()
        self.c1_bottleneck = ConvModule(
            c1_in_channels,
            c1_channels,
            1,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg)
        # The whole classifier is ``conv_seg``; no dropout in ``cls_seg``.
        self.dropout = None
        self.conv_seg = self._build_classifier(classifier_kernel_size,
                                               num_classifier_convs)

    @staticmethod
    def _check_args(in_channels, c1_in_channels, c1_channels, dilations,
                    classifier_channels, num_classifier_convs, in_index,
                    input_transform) -> None:
        """Raise a clear error for a bad head config."""
        name = 'DeepLabV3PlusHead'
        for key, value in (('in_channels', in_channels),
                           ('c1_in_channels', c1_in_channels), ('c1_channels',
                                                                c1_channels),
                           ('classifier_channels', classifier_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f'{name}: decode_head.{key} must be a positive int, got '
                    f'{value!r} (in_channels: high-level input channels, '
                    'c1_in_channels: low-level input channels).')
        if not isinstance(num_classifier_convs, int) \
                or num_classifier_convs < 0:
            raise ValueError(f'{name}: decode_head.num_classifier_convs must '
                             f'be an int >= 0, got {num_classifier_convs!r}.')
        if not isinstance(dilations, (list, tuple)) or not all(
                isinstance(d, int) and d > 1 for d in dilations):
            raise ValueError(
                f'{name}: decode_head.dilations must be a list/tuple of the '
                'rates (ints > 1) of the 3x3 ASPP branches, e.g. (12, 24, '
                f'36); the 1x1 branch is always added. Got {dilations!r}.')
        if input_transform != 'multiple_select':
            raise ValueError(
                f'{name}: decode_head.input_transform must be '
                f"'multiple_select' (low-level and high-level inputs), got "
                f'{input_transform!r}.')
        if not isinstance(in_index, (list, tuple)) or len(in_index) != 2:
            raise ValueError(
                f'{name}: decode_head.in_index must name two backbone outputs '
                '(low-level, high-level), e.g. (0, 3) for a ResNet, got '
                f'{in_index!r}.')

    def _build_aspp(self) -> None:
        """Image pooling, 1x1 and dilated 3x3 branches, and the fuse conv."""
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            ConvModule(
                self.aspp_in_channels,
                self.channels,
                1,
                conv_cfg=self.conv_cfg,
                norm_cfg=self.norm_cfg,
                act_cfg=self.act_cfg))
        # mmseg's ASPPModule builds a 1x1 branch for rate 1.
        self.aspp_modules = ASPPModule(
            (1, ) + self.dilations,
            self.aspp_in_channels,
            self.channels,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg)
        self.bottleneck = conv_bn_act_dropout(
            (len(self.dilations) + 2) * self.channels,
            self.channels,
            3,
            dropout_ratio=self.dropout_ratio,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg)

    def _build_classifier(self, kernel_size: int,
                          num_convs: int) -> Sequential:
        """Conv blocks and the final 1x1 conv, as one ``conv_seg``."""
        layers: List[nn.Module] = []
        in_channels = self.fused_channels
        for _ in range(num_convs):
            layers.append(
                conv_bn_act_dropout(
                    in_channels,
                    self.classifier_channels,
                    kernel_size,
                    dropout_ratio=self.dropout_ratio,
                    conv_cfg=self.conv_cfg,
                    norm_cfg=self.norm_cfg,
                    act_cfg=self.act_cfg))
            in_channels = self.classifier_channels
        layers.append(nn.Conv2d(in_channels, self.out_channels, 1))
        return Sequential(
            *layers,
            init_cfg=dict(
                type='Normal',
                std=0.01,
                override=dict(name=str(len(layers) - 1))))

    def _forward_aspp(self, x: Tensor) -> Tensor:
        """ASPP on the high-level features, fused to ``channels``."""
        pooled = resize(
            self.image_pool(x),
            size=x.shape[2:],
            mode='bilinear',
            align_corners=self.align_corners)
        aspp_outs = [pooled] + self.aspp_modules(x)
        return self.bottleneck(torch.cat(aspp_outs, dim=1))

    def _forward_feature(self, inputs: Tuple[Tensor]) -> Tensor:
        """The fused features fed to the classifier.

        Args:
            inputs (Tuple[Tensor]): Multi-level backbone features.

        Returns:
            Tensor: ``(B, c1_channels + channels, H_c1, W_c1)``.
        """
        low_level, high_level = self._transform_inputs(inputs)
        if low_level.shape[1] != self.c1_in_channels or \
                high_level.shape[1] != self.aspp_in_channels:
            raise ValueError(
                f'{type(self).__name__}: in_index={self.in_index} selects '
                f'features with {low_level.shape[1]} and '
                f'{high_level.shape[1]} channels, but the config says '
                f'c1_in_channels={self.c1_in_channels} and '
                f'in_channels={self.aspp_in_channels}; fix decode_head.')
        c1_feat = self.c1_bottleneck(low_level)
        aspp_feat = resize(
            self._forward_aspp(high_level),
            size=c1_feat.shape[2:],
            mode='bilinear',
            align_corners=self.align_corners)
        return torch.cat([c1_feat, aspp_feat], dim=1)

    def forward(self, inputs: Tuple[Tensor]) -> Tensor:
        """Segmentation logits at the low-level resolution (stride 4).

        Args:
            inputs (Tuple[Tensor]): Multi-level backbone features.

        Returns:
            Tensor: ``(B, out_channels, H_c1, W_c1)``.
        """
        return self.cls_seg(self._forward_feature(inputs))
