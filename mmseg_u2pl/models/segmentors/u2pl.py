# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""U2PL: using unreliable pseudo-labels (paper Sec. 3).

One module for one training step of the paper (Fig. 2): teacher
pseudo-labels, CutMix, the student pass and the three losses, in the order
they run; the helpers it calls live in ``models/utils``.
"""
import copy
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Tuple

import torch
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import (ConfigType, OptConfigType, OptMultiConfig, SampleList,
                         add_prefix)
from torch import Tensor, nn
from torch.profiler import record_function

from ...utils import train_progress, warmup_iters
from ..heads.representation_head import (classifier_in_channels,
                                         forward_with_classifier_input)
from ..utils.cutmix import apply_cutmix, cutmix_masks
from ..utils.nonfinite import restore_buffers, save_buffers
from ..utils.random_stream import current_iteration, separate_random_stream
from ..utils.reliability import (alpha_schedule, entropy,
                                 entropy_filtered_loss)
from ..utils.seg_maps import (resize_labels, resize_masks, scalar,
                              stack_ground_truth, unlabeled_ground_truth,
                              valid_pixel_mask)
from .mean_teacher import MeanTeacherSegmentor

DEFAULT_SEMI_TRAIN_CFG = dict(
    unsup_weight=1.0,  # eta of paper Eq. 8: lambda_u = eta * all / kept
    alpha_0=20.0,  # initial % of unreliable pixels
    # where the linear decay of alpha_t starts: 'train_start' (paper:
    # alpha_0 * (1 - t / T)) or 'warmup_end' (over the semi-supervised
    # iterations only, from t_w: alpha_t = alpha_0 when they begin)
    alpha_decay_start='train_start',
    cutmix=dict(prob=0.5, area_ratio=0.5, per_sample=False),
    ignore_index=255,
    # one teacher pass on [labeled; unmixed unlabeled] serves both the
    # pseudo-labels and the contrastive targets (the unlabeled part mixed
    # with the CutMix boxes at feature resolution) instead of a second pass
    # on the mixed batch (paper / reference code)
    reuse_teacher_forward=False,
    # mode of the second teacher pass, whose outputs are the contrastive
    # targets: 'eval' (running BN statistics, no dropout) or 'train' (as in
    # the reference code: batch statistics and dropout, under no_grad; the
    # teacher's running statistics are left untouched). 'train' needs
    # reuse_teacher_forward=False.
    contrastive_teacher_mode='eval',
)
CUTMIX_KEYS = ('prob', 'area_ratio', 'per_sample')
ALPHA_DECAY_STARTS = ('train_start', 'warmup_end')
TEACHER_MODES = ('eval', 'train')


@MODELS.register_module()
class U2PL(MeanTeacherSegmentor):
    """U2PL / U2PL+ semi-supervised segmentor.

    One training iteration after the warm-up (paper Sec. 3, Fig. 2):

    1. the teacher (eval, no grad) pseudo-labels the unlabeled batch at the
       crop size: ``p_u = softmax``, ``y_hat = argmax p_u`` (no threshold);
    2. CutMix mixes the unlabeled images and, with the same boxes, their
       pseudo-labels, entropies and valid masks;
    3. the student runs once on ``[labeled; mixed unlabeled]`` (shared BN
       statistics);
    4. losses: the student's own mmseg decode/auxiliary losses on labeled
       images (``sup.*``); the cross-entropy on mixed unlabeled images with
       the ``alpha_t`` % highest-entropy pixels ignored, averaged over the
       kept pixels and weighted by ``lambda_u = eta * B_u * H * W / kept``
       (paper Eq. 8, ``eta`` = ``unsup_weight``; ``unsup.loss_ce``); and, when
       ``contrastive_loss`` is set, the unreliable-pixel contrastive loss on
       representations (``contrast.*``) with teacher targets from a second
       teacher forward on the mixed batch (or, with
       ``reuse_teacher_forward=True``, from the first one: the teacher then
       runs once on ``[labeled; unmixed unlabeled]`` and its unlabeled
       features are mixed with the same boxes at feature resolution).

    Args:
        segmentor (ConfigType): The student, a plain mmseg segmentor config.
        representation_head (OptConfigType): Projection head on the feature
            map the decode head feeds to its classifier (``in_channels`` is
            inferred when omitted). Required with ``contrastive_loss``.
        contrastive_loss (OptConfigType): E.g.
            ``dict(type='UnreliableContrastiveLoss')``; ``num_classes`` and
            ``feat_channels`` are inferred when omitted. None disables it.
        semi_train_cfg (OptConfigType): ``unsup_weight`` (``eta`` of
            Eq. 8, 1.0), ``alpha_0`` (20, %), ``alpha_decay_start``
            (``'train_start'``:
            ``alpha_t = alpha_0 (1 - t / T)`` as in the paper;
            ``'warmup_end'``: the decay runs over the semi-supervised
            iterations only, from ``alpha_0`` at the end of the warm-up),
            ``cutmix`` (``prob`` 0.5, ``area_ratio``
            0.5, ``per_sample`` False), ``ignore_index`` (255),
            ``reuse_teacher_forward`` (False: step 4),
            ``contrastive_teacher_mode`` (``'eval'``; ``'train'`` runs the
            second teacher pass with BN batch statistics and dropout, as the
            reference code does), and the non-finite
            loss handling of :class:`MeanTeacherSegmentor` (``nonfinite_loss``,
            ``max_consecutive_nonfinite``). Unknown keys are rejected.
        data_preprocessor, semi_test_cfg, channels_last, init_cfg: See
            :class:`MeanTeacherSegmentor`.

    Example:
        >>> model = dict(
        ...     type='U2PL',
        ...     segmentor=dict(type='EncoderDecoder', ...),
        ...     representation_head=dict(type='RepresentationHead'),
        ...     contrastive_loss=dict(type='UnreliableContrastiveLoss',
        ...                           loss_weight=0.1),
        ...     semi_train_cfg=dict(unsup_weight=1.0, alpha_0=20,
        ...                         cutmix=dict(prob=0.5)))
        >>> custom_hooks = [dict(type='MeanTeacherHook', warmup_epochs=1)]
    """

    semi_train_keys = MeanTeacherSegmentor.semi_train_keys + tuple(
        DEFAULT_SEMI_TRAIN_CFG)

    def __init__(self,
                 segmentor: ConfigType,
                 representation_head: OptConfigType = None,
                 contrastive_loss: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 semi_train_cfg: OptConfigType = None,
                 semi_test_cfg: OptConfigType = None,
                 channels_last: bool = False,
                 init_cfg: OptMultiConfig = None) -> None:
        if contrastive_loss is not None and representation_head is None:
            raise ValueError(
                'model.contrastive_loss needs model.representation_head, '
                'e.g. representation_head=dict(type="RepresentationHead").')
        super().__init__(
            segmentor=segmentor,
            data_preprocessor=data_preprocessor,
            semi_train_cfg=semi_train_cfg,
            semi_test_cfg=semi_test_cfg,
            channels_last=channels_last,
            init_cfg=init_cfg)
        self.semi_train_cfg = self._with_defaults(self.semi_train_cfg)
        if representation_head is not None:
            self._add_representation_head(representation_head)
        self.contrastive_loss = None
        if contrastive_loss is not None:
            contrastive_loss = dict(contrastive_loss)
            contrastive_loss.setdefault('num_classes',
                                        self.student.decode_head.num_classes)
            contrastive_loss.setdefault(
                'feat_channels', self.student.representation_head.out_channels)
            contrastive_loss.setdefault('ignore_index',
                                        self.semi_train_cfg['ignore_index'])
            self.contrastive_loss = MODELS.build(contrastive_loss)
            # every rank holds the same memory bank (candidates are gathered
            # before they enter it): never broadcast it through DDP
            self._ddp_params_and_buffers_to_ignore = [
                f'contrastive_loss.{name}'
                for name, _ in self.contrastive_loss.named_buffers()
            ]

    @staticmethod
    def _with_defaults(cfg: dict) -> dict:
        merged = dict(DEFAULT_SEMI_TRAIN_CFG, **cfg)
        cutmix = dict(DEFAULT_SEMI_TRAIN_CFG['cutmix'],
                      **(cfg.get('cutmix') or {}))
        unknown = sorted(set(cutmix) - set(CUTMIX_KEYS))
        if unknown:
            raise KeyError(
                f'Unknown key(s) {unknown} in model.semi_train_cfg.cutmix; '
                f'known keys: {list(CUTMIX_KEYS)}.')
        merged['cutmix'] = cutmix
        if merged['alpha_decay_start'] not in ALPHA_DECAY_STARTS:
            raise ValueError(
                'model.semi_train_cfg.alpha_decay_start must be one of '
                f'{list(ALPHA_DECAY_STARTS)}, got '
                f'{merged["alpha_decay_start"]!r}.')
        mode = merged['contrastive_teacher_mode']
        if mode not in TEACHER_MODES:
            raise ValueError(
                'model.semi_train_cfg.contrastive_teacher_mode must be one of '
                f'{list(TEACHER_MODES)}, got {mode!r}.')
        if mode == 'train' and merged['reuse_teacher_forward']:
            raise ValueError(
                'model.semi_train_cfg.contrastive_teacher_mode="train" runs '
                'the second teacher pass in train mode, but '
                'reuse_teacher_forward=True skips that pass: set '
                'reuse_teacher_forward=False, or keep '
                'contrastive_teacher_mode="eval".')
        return merged

    def _add_representation_head(self, cfg: ConfigType) -> None:
        """Give the student the representation head, and the teacher a copy.

        The contrastive branch (this head's construction, initialisation and
        dropout, and the loss's sampling) draws its random numbers aside
        from the main stream (:func:`separate_random_stream`): with the same
        seed, a run with the branch has the same warm-up, CutMix boxes and
        decode-head dropout as a run without it, so that an ablation
        compares the contrastive term and nothing else.
        """
        cfg = dict(cfg)
        if cfg.get('in_channels') is None:
            cfg['in_channels'] = classifier_in_channels(
                self.student.decode_head)
        with separate_random_stream('representation_head.build'):
            head = MODELS.build(cfg)
        if self.channels_last:
            head.to(memory_format=torch.channels_last)
        self.student.add_module('representation_head', head)
        self.teacher.add_module(
            'representation_head',
            copy.deepcopy(head).requires_grad_(False).eval())

    # ------------------------------------------------------------------
    # network passes
    # ------------------------------------------------------------------
    def _run(
            self, net: nn.Module, inputs: Tensor, with_representation: bool
    ) -> Tuple[Tensor, tuple, Optional[Tensor]]:
        """Decode-head logits, backbone features and representations."""
        feats = net.extract_feat(inputs)
        if not with_representation:
            return net.decode_head.forward(feats), feats, None
        logits, cls_feat = forward_with_classifier_input(
            net.decode_head, feats)
        # the teacher's own stream: in train mode its dropout masks are not
        # the student's
        key = 'representation_head' if net is self.student \
            else 'teacher.representation_head'
        with separate_random_stream(
                key, current_iteration(), device=cls_feat.device):
            rep = net.representation_head(cls_feat)
        return logits, feats, rep

    def _resize(self, logits: Tensor, size) -> Tensor:
        if tuple(logits.shape[-2:]) == tuple(size):
            return logits
        return resize(
            logits,
            size=size,
            mode='bilinear',
            align_corners=self.student.decode_head.align_corners)

    def _sup_losses(self, logits_l: Tensor, feats: tuple, num_labeled: int,
                    data_samples: SampleList) -> dict:
        """The student's mmseg losses on the labeled part of the batch."""
        student = self.student
        losses = add_prefix(
            student.decode_head.loss_by_feat(logits_l, data_samples), 'decode')
        if student.with_auxiliary_head:
            feats_l = [f[:num_labeled] for f in feats]
            losses.update(
                student._auxiliary_head_forward_train(feats_l, data_samples))
        return add_prefix(losses, 'sup')

    def supervised_loss(self, inputs: Tensor,
                        data_samples: SampleList) -> dict:
        """Warm-up: supervised losses only.

        With a representation head, it still runs (with weight 0) so that
        DDP sees gradients for every trainable parameter.
        """
        with_rep = self.contrastive_loss is not None
        logits, feats, rep = self._run(self.student, inputs, with_rep)
        losses = self._sup_losses(logits, feats, len(inputs), data_samples)
        if rep is not None:
            losses['contrast.loss_contrast'] = rep.sum() * 0.
        return losses

    def end_step(self, keep: bool) -> None:
        """Also keep or revert the contrastive loss's bank and prototype."""
        super().end_step(keep)
        if self.contrastive_loss is not None:
            self.contrastive_loss.end_step(keep)

    # ------------------------------------------------------------------
    # the semi-supervised step
    # ------------------------------------------------------------------
    def semi_loss(self, inputs: Dict[str, Tensor],
                  data_samples: Dict[str, SampleList]) -> dict:
        cfg = self.semi_train_cfg
        ignore_index = cfg['ignore_index']
        self.last_pseudo_labels = None  # freed before this step's passes
        img_l, img_u = inputs['labeled'], inputs['unlabeled']
        samples_l, samples_u = data_samples['labeled'], data_samples[
            'unlabeled']
        num_l, num_u = img_l.shape[0], img_u.shape[0]
        crop = img_u.shape[-2:]
        cur_iter, max_iters = train_progress(required=True)
        alpha_t = alpha_schedule(cfg['alpha_0'], cur_iter, max_iters,
                                 self._alpha_decay_start_iter())

        # 1. pseudo-labels from the teacher, at the crop size
        with_rep = self.contrastive_loss is not None
        reuse = with_rep and cfg['reuse_teacher_forward']
        with torch.no_grad(), record_function('u2pl:teacher_pseudo_labels'):
            if reuse:
                t_logits, _, t_rep = self._run(self.teacher,
                                               torch.cat([img_l, img_u]), True)
                teacher_out = (t_logits, t_rep)
                t_logits_u = t_logits[num_l:]
            else:
                t_logits_u, _, _ = self._run(self.teacher, img_u, False)
                teacher_out = None
            prob_u = self._resize(t_logits_u.float(), crop).softmax(dim=1)
            pseudo_u = prob_u.argmax(dim=1)
            entropy_u = entropy(prob_u)
            valid_u = valid_pixel_mask(samples_u, img_u)

        # 2. CutMix with the same boxes for everything
        with torch.no_grad(), record_function('u2pl:cutmix'):
            boxes = cutmix_masks(
                num_u, crop[0], crop[1], device=img_u.device, **cfg['cutmix'])
            img_u = apply_cutmix(boxes, img_u)
            pseudo_u = apply_cutmix(boxes, pseudo_u)
            entropy_u = apply_cutmix(boxes, entropy_u)
            valid_u = apply_cutmix(boxes, valid_u)

        # 3. one student pass on labeled + mixed unlabeled images
        with record_function('u2pl:student'):
            logits, feats, rep = self._run(self.student,
                                           torch.cat([img_l, img_u]), with_rep)

        # 4. losses
        with record_function('u2pl:sup_loss'):
            losses = self._sup_losses(logits[:num_l], feats, num_l, samples_l)
        with record_function('u2pl:unsup_loss'):
            # paper Eq. 8: mean over kept pixels * (B_u * H * W) / kept
            loss_u, partition, kept = entropy_filtered_loss(
                self._resize(logits[num_l:], crop), pseudo_u, entropy_u,
                valid_u, alpha_t, ignore_index)
            losses['unsup.loss_ce'] = loss_u * cfg['unsup_weight']
            losses.update(
                self._diagnostics(alpha_t, partition, kept, valid_u, pseudo_u,
                                  boxes, samples_u))
        if with_rep:
            losses.update(
                self._contrastive(rep, img_l, img_u, samples_l, pseudo_u,
                                  valid_u, alpha_t, teacher_out, boxes))
        self._record_for_visualisation(img_u, pseudo_u, entropy_u, kept,
                                       valid_u)
        return losses

    def _alpha_decay_start_iter(self) -> int:
        """``t_0`` of :func:`alpha_schedule` (``alpha_decay_start``)."""
        if self.semi_train_cfg['alpha_decay_start'] == 'train_start':
            return 0
        t_w = warmup_iters()
        if t_w is None:
            raise RuntimeError(
                'model.semi_train_cfg.alpha_decay_start="warmup_end" needs '
                'the warm-up length, which MeanTeacherHook sets before '
                'training: add `custom_hooks = [dict(type="MeanTeacherHook", '
                '...)]` to the config.')
        return t_w

    def _contrastive(self,
                     rep_s: Tensor,
                     img_l: Tensor,
                     img_u: Tensor,
                     samples_l: SampleList,
                     pseudo_u: Tensor,
                     valid_u: Tensor,
                     alpha_t: float,
                     teacher_out: Optional[Tuple[Tensor, Tensor]] = None,
                     boxes: Optional[Tensor] = None) -> dict:
        """Teacher targets on the mixed batch and the contrastive loss.

        ``teacher_out`` (logits, representations) of a teacher pass on the
        unmixed ``[labeled; unlabeled]`` batch is reused when given: its
        unlabeled part is mixed with the CutMix ``boxes`` at feature
        resolution instead of running the teacher on the mixed batch.
        """
        ignore_index = self.semi_train_cfg['ignore_index']
        rep_size = rep_s.shape[-2:]
        num_l = img_l.shape[0]
        with torch.no_grad(), record_function('u2pl:teacher_contrast'):
            if teacher_out is None:
                with self._contrastive_teacher_mode(rep_s.device):
                    t_logits, _, rep_t = self._run(self.teacher,
                                                   torch.cat([img_l, img_u]),
                                                   True)
                prob_t = self._resize(t_logits.float(),
                                      rep_size).softmax(dim=1)
            else:
                t_logits, rep_t = teacher_out
                prob_t = self._resize(t_logits.float(),
                                      rep_size).softmax(dim=1)
                boxes_r = resize_masks(boxes, rep_t.shape[-2:])
                rep_t = torch.cat(
                    [rep_t[:num_l],
                     apply_cutmix(boxes_r, rep_t[num_l:])])
                boxes_p = resize_masks(boxes, rep_size)
                prob_t = torch.cat(
                    [prob_t[:num_l],
                     apply_cutmix(boxes_p, prob_t[num_l:])])
            label_l = stack_ground_truth(samples_l)
            label_u = torch.where(valid_u, pseudo_u,
                                  torch.full_like(pseudo_u, ignore_index))
            labels = torch.cat([
                resize_labels(label_l, rep_size),
                resize_labels(label_u, rep_size)
            ])
        with record_function('u2pl:contrastive_loss'), \
                separate_random_stream('contrastive_loss',
                                       current_iteration(),
                                       device=rep_s.device,
                                       per_rank=True):
            # the bank push is reverted by `end_step` if the step is skipped
            loss, log_vars = self.contrastive_loss(rep_s, rep_t, prob_t,
                                                   labels, img_l.shape[0],
                                                   alpha_t)
        out = {f'contrast.{self.contrastive_loss.loss_name}': loss}
        out.update({f'contrast.{k}': scalar(v) for k, v in log_vars.items()})
        return out

    @contextmanager
    def _contrastive_teacher_mode(self, device) -> Iterator[None]:
        """The teacher's mode for the contrastive targets' pass.

        In ``'train'`` mode (the reference code's) BN uses batch statistics
        and dropout is active; the running statistics are restored
        afterwards (the teacher's buffers stay the EMA of the student's) and
        dropout draws from a stream of its own, so the main random stream
        (CutMix boxes, the student's dropout) is the same in both modes.
        """
        if self.semi_train_cfg['contrastive_teacher_mode'] == 'eval':
            yield
            return
        teacher = self.teacher
        saved = save_buffers(teacher)
        teacher.train()
        try:
            with separate_random_stream(
                    'teacher_contrast',
                    current_iteration(),
                    device=device,
                    per_rank=True):
                yield
        finally:
            teacher.eval()
            restore_buffers(teacher, saved)

    def _diagnostics(self, alpha_t: float, partition, kept: Tensor,
                     valid_u: Tensor, pseudo_u: Tensor, boxes: Tensor,
                     samples_u: SampleList) -> dict:
        """Logged values that are not losses (no 'loss' in their keys)."""
        num_valid = valid_u.sum().clamp(min=1)
        out = {
            'unsup.alpha_t': scalar(alpha_t),
            'unsup.entropy_thresh': scalar(partition.high_thresh),
            'unsup.reliable_ratio': scalar(kept.sum() / num_valid),
        }
        gt_u = unlabeled_ground_truth(samples_u, pseudo_u.device)
        if gt_u is not None:
            # diagnostics only: the ground truth never reaches a loss
            gt_u = apply_cutmix(boxes, gt_u)
            known = valid_u & (gt_u != self.semi_train_cfg['ignore_index'])
            correct = (pseudo_u == gt_u) & known
            out['unsup.pseudo_acc'] = scalar(correct.sum() /
                                             known.sum().clamp(min=1))
            out['unsup.pseudo_acc_reliable'] = scalar(
                (correct & kept).sum() / (known & kept).sum().clamp(min=1))
        return out

    # ------------------------------------------------------------------
    # visualisation support (read by PseudoLabelVisualizationHook)
    # ------------------------------------------------------------------
    #: what the unsupervised loss saw in the last semi-supervised step
    #: (views of the step's tensors, no copy; None before the first one)
    last_pseudo_labels: Optional[dict] = None

    def _record_for_visualisation(self, img_u, pseudo_u, entropy_u, kept,
                                  valid_u) -> None:
        self.last_pseudo_labels = dict(
            inputs=img_u.detach(),
            pseudo_label=pseudo_u.detach(),
            entropy=entropy_u.detach(),
            reliable_mask=kept.detach(),
            valid_mask=valid_u.detach())
