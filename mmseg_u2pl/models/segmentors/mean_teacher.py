# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Mean-teacher segmentor: a student mmseg segmentor and its EMA teacher."""
import copy
from contextlib import nullcontext
from typing import Dict, List, Optional

import torch
from mmengine.optim import OptimWrapper
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.utils import (ConfigType, OptConfigType, OptMultiConfig,
                         OptSampleList, SampleList, add_prefix)
from torch import Tensor, nn

from ...utils import is_semi_iter, train_progress, warmup_iters
from ..data_preprocessor import BRANCHES
from ..utils.nonfinite import (DEFAULT_NONFINITE_CFG, SKIPPED_STEP_LOSS,
                               NonFiniteGuard, nonfinite_loss_terms,
                               optimizer_steps_dropped, restore_buffers,
                               save_buffers, zero_loss)

STUDENT, TEACHER = 'student', 'teacher'


@MODELS.register_module()
class MeanTeacherSegmentor(BaseSegmentor):
    """Student + EMA teacher around any mmseg segmentor (paper Sec. 3.1).

    The student is any mmseg segmentor config; the teacher, its copy, has no
    gradients, is updated only by :class:`~mmseg_u2pl.engine.hooks.
    MeanTeacherHook` and stays in eval mode.

    Training batches (:class:`~mmseg_u2pl.datasets.SemiDataset`) have
    ``'labeled'`` and ``'unlabeled'`` branches. This class trains the student
    on the labeled one; subclasses (:class:`U2PL`) add :meth:`semi_loss`.

    ``predict`` uses ``semi_test_cfg.predict_on`` (``'teacher'``). A plain
    mmseg checkpoint (``load_from``) fills both networks.

    Non-finite losses (``docs/robustness.md``): at the end of :meth:`loss`
    the loss terms are checked for NaN/Inf (one host read, agreed over the
    ranks); a bad step is undone (:meth:`end_step`) and, with ``'skip'``,
    returns a zero loss (``skipped_step.loss``) that :meth:`train_step`
    backpropagates without updating the parameters; ``step_skipped`` tells
    :class:`~mmseg_u2pl.engine.hooks.MeanTeacherHook` to leave the teacher.
    Under DDP, :class:`~mmseg_u2pl.engine.MeanTeacherDistributedDataParallel`
    runs :meth:`train_step`.

    Args:
        segmentor (ConfigType): Config of the student segmentor.
        data_preprocessor (OptConfigType): Defaults to a
            ``SemiSegDataPreProcessor`` with the settings of
            ``segmentor.data_preprocessor``.
        semi_train_cfg (OptConfigType): Training settings; subclasses add
            their own. Here: ``nonfinite_loss`` (``'skip'``, default, or
            ``'raise'``) and ``max_consecutive_nonfinite`` (5, or None for
            no limit). Defaults to None.
        semi_test_cfg (OptConfigType): Defaults to
            ``dict(predict_on='teacher')``.
        channels_last (bool): Keep the 4-D weights of both networks in
            channels-last (NHWC) memory format (usually faster on GPUs with
            AMP). Checkpoints load into either layout. Defaults to False.
        init_cfg (OptMultiConfig): Initialisation config. Defaults to None.

    Example:
        >>> model = dict(type='MeanTeacherSegmentor',
        ...              segmentor=dict(type='EncoderDecoder', ...))
        >>> custom_hooks = [dict(type='MeanTeacherHook', warmup_iters=100)]
    """

    #: keys of ``semi_train_cfg`` this class understands (subclasses extend)
    semi_train_keys = tuple(DEFAULT_NONFINITE_CFG)
    semi_test_keys = ('predict_on', )

    def __init__(self,
                 segmentor: ConfigType,
                 data_preprocessor: OptConfigType = None,
                 semi_train_cfg: OptConfigType = None,
                 semi_test_cfg: OptConfigType = None,
                 channels_last: bool = False,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(
            data_preprocessor=self._build_data_preprocessor(
                data_preprocessor, segmentor),
            init_cfg=init_cfg)
        semi_train_cfg = self._check_cfg('semi_train_cfg', semi_train_cfg,
                                         self.semi_train_keys)
        self.semi_train_cfg = dict(DEFAULT_NONFINITE_CFG, **semi_train_cfg)
        self.nonfinite = NonFiniteGuard(
            self.semi_train_cfg['nonfinite_loss'],
            self.semi_train_cfg['max_consecutive_nonfinite'])
        self.semi_test_cfg = self._check_cfg('semi_test_cfg', {
            'predict_on': TEACHER,
            **(semi_test_cfg or {})
        }, self.semi_test_keys)
        if self.semi_test_cfg['predict_on'] not in (TEACHER, STUDENT):
            raise ValueError(
                'semi_test_cfg.predict_on must be "teacher" or "student", '
                f'got {self.semi_test_cfg["predict_on"]!r}')

        self.student = MODELS.build(segmentor)
        if not getattr(self.student, 'with_decode_head', False):
            raise ValueError(
                f'model.segmentor ({segmentor.get("type")}) has no decode '
                'head: a semi-supervised segmentor needs the student\'s '
                '`decode_head` for pseudo-labels and losses. Add '
                '`decode_head=dict(...)` to `model.segmentor`.')
        self.teacher = copy.deepcopy(self.student).requires_grad_(False).eval()
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        #: whether the last :meth:`loss` was non-finite and undone
        self.step_skipped = False
        self._buffer_snapshot: Optional[List[Tensor]] = None
        #: whether :meth:`train_step` runs (it applies a skipped step)
        self._in_train_step = False
        self._register_load_state_dict_pre_hook(self._fill_from_plain_ckpt)

    @staticmethod
    def _build_data_preprocessor(cfg: OptConfigType,
                                 segmentor: ConfigType) -> nn.Module:
        """A ``SemiSegDataPreProcessor``, from the student's settings or a
        plain ``SegDataPreProcessor`` config (as mmseg base configs give)."""
        if cfg is None:
            cfg = segmentor.get('data_preprocessor') or {}
        if isinstance(cfg, nn.Module):
            return cfg
        cfg = copy.deepcopy(dict(cfg))
        if cfg.get('type',
                   'SegDataPreProcessor') in ('SegDataPreProcessor',
                                              'mmseg.SegDataPreProcessor'):
            cfg['type'] = 'SemiSegDataPreProcessor'
        return MODELS.build(cfg)

    @staticmethod
    def _check_cfg(name: str, cfg: OptConfigType, known: tuple) -> dict:
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(known))
        if unknown:
            raise KeyError(
                f'Unknown key(s) {unknown} in model.{name}; known keys: '
                f'{sorted(known)}. Check the spelling in your config.')
        return cfg

    def init_weights(self) -> None:
        """Initialise the student, then make the teacher an exact copy."""
        super().init_weights()
        self.teacher.load_state_dict(self.student.state_dict())

    @staticmethod
    def _fill_from_plain_ckpt(state_dict, prefix, *args) -> None:
        """Load a plain mmseg checkpoint into both student and teacher."""
        own = (prefix + STUDENT + '.', prefix + TEACHER + '.')
        keys = [k for k in state_dict if k.startswith(prefix)]
        if not keys or any(k.startswith(own) for k in keys):
            return
        for key in keys:
            value = state_dict.pop(key)
            plain = key[len(prefix):]
            for net in (STUDENT, TEACHER):
                state_dict[f'{prefix}{net}.{plain}'] = value

    def train(self, mode: bool = True) -> 'MeanTeacherSegmentor':
        """Set train mode for everything but the teacher (always eval)."""
        super().train(mode)
        self.teacher.eval()
        return self

    @property
    def semi_active(self) -> Optional[bool]:
        """Whether the iteration is past the warm-up (both read from the
        ``MessageHub``'s runtime info); None when either is unknown."""
        cur_iter, t_w = train_progress()[0], warmup_iters()
        if cur_iter is None or t_w is None:
            return None
        return is_semi_iter(cur_iter, t_w)

    @property
    def predictor(self) -> nn.Module:
        """The network used by ``predict`` and ``_forward``."""
        return getattr(self, self.semi_test_cfg['predict_on'])

    def extract_feat(self, inputs: Tensor):
        return self.predictor.extract_feat(inputs)

    def encode_decode(self, inputs: Tensor, batch_img_metas):
        return self.predictor.encode_decode(inputs, batch_img_metas)

    def predict(self,
                inputs: Tensor,
                data_samples: OptSampleList = None) -> SampleList:
        return self.predictor.predict(inputs, data_samples)

    def _forward(self, inputs: Tensor, data_samples: OptSampleList = None):
        return self.predictor._forward(inputs, data_samples)

    def train_step(self,
                   data: dict,
                   optim_wrapper: OptimWrapper,
                   wrapper: Optional[nn.Module] = None) -> Dict[str, Tensor]:
        """One training step: losses, non-finite guard, parameter update.

        As ``BaseModel.train_step``, except that a step :meth:`loss` skipped
        for a non-finite loss updates no parameter.

        Args:
            data (dict): A batch from the dataloader.
            optim_wrapper (OptimWrapper): The optimizer wrapper.
            wrapper (nn.Module, optional): The DDP wrapper around this model:
                the forward runs through it (gradient synchronisation, and
                ``no_sync`` during gradient accumulation). Defaults to None.

        Returns:
            dict: The logged values.
        """
        outer = wrapper if wrapper is not None else self
        self._in_train_step = True
        try:
            with optim_wrapper.optim_context(outer):
                data = self.data_preprocessor(data, True)
                losses = outer._run_forward(data, mode='loss')
        finally:
            self._in_train_step = False
        parsed_loss, log_vars = self.parse_losses(losses)
        with optimizer_steps_dropped(optim_wrapper) if self.step_skipped \
                else nullcontext():
            optim_wrapper.update_params(parsed_loss)
        return log_vars

    def loss(self, inputs: Dict[str, Tensor],
             data_samples: Dict[str, SampleList]) -> dict:
        """Supervised loss (warm-up) or the semi-supervised losses.

        Args:
            inputs (dict): ``{'labeled': Tensor, 'unlabeled': Tensor}``.
            data_samples (dict): The matching lists of ``SegDataSample``.

        Returns:
            dict: Prefixed losses (``sup.*``, ``unsup.*``, ...) and logged
            diagnostics (keys without ``loss``).
        """
        if not isinstance(inputs, dict) or set(inputs) != set(BRANCHES):
            raise TypeError(
                f'{type(self).__name__} trains on batches from SemiDataset '
                '(inputs with "labeled" and "unlabeled" branches); got '
                f'{type(inputs).__name__}. Use `type="SemiDataset"` for '
                'train_dataloader.dataset and a SemiSegDataPreProcessor.')
        semi_active = self.semi_active
        if semi_active is None:
            raise RuntimeError(
                f'{type(self).__name__} does not know whether the '
                'supervised warm-up is over: add '
                '`custom_hooks = [dict(type="MeanTeacherHook", ...)]` to the '
                'config.')
        self.begin_step()
        if not semi_active:
            losses = self.supervised_loss(inputs['labeled'],
                                          data_samples['labeled'])
        else:
            losses = self.semi_loss(inputs, data_samples)
        return self._guard_nonfinite(losses)

    def begin_step(self) -> None:
        """Copy the student's buffers (BN statistics) that a skipped step
        restores (:meth:`end_step`)."""
        self._buffer_snapshot = save_buffers(self.student)

    @torch.no_grad()
    def end_step(self, keep: bool) -> None:
        """Keep or undo (``keep=False``) the step begun last."""
        snapshot, self._buffer_snapshot = self._buffer_snapshot, None
        if not keep and snapshot is not None:
            restore_buffers(self.student, snapshot)

    def _guard_nonfinite(self, losses: dict) -> dict:
        """Return ``losses``, or undo and skip (or raise) a non-finite
        step (see the class docstring)."""
        bad_terms = nonfinite_loss_terms(losses)
        self.step_skipped = bool(bad_terms)
        self.end_step(keep=not bad_terms)
        self.nonfinite.record(bad_terms, can_skip=self._in_train_step)
        if bad_terms:
            losses = {SKIPPED_STEP_LOSS: zero_loss(self)}
        if self.nonfinite.total:
            device = next(self.student.parameters()).device
            losses['nonfinite_steps'] = torch.tensor(
                float(self.nonfinite.total), device=device)
        return losses

    def supervised_loss(self, inputs: Tensor,
                        data_samples: SampleList) -> dict:
        """The student's own mmseg losses on labeled images (``sup.*``)."""
        return add_prefix(self.student.loss(inputs, data_samples), 'sup')

    def semi_loss(self, inputs: Dict[str, Tensor],
                  data_samples: Dict[str, SampleList]) -> dict:
        """Losses after the warm-up. The base class stays supervised."""
        return self.supervised_loss(inputs['labeled'], data_samples['labeled'])
