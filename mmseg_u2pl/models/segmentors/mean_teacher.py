# Copyright (c) mmseg_u2pl contributors. All rights reserved.
"""Mean-teacher segmentor: a student mmseg segmentor and its EMA teacher."""
import copy
from typing import Dict, Optional

from mmengine.logging import MessageHub
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.utils import (ConfigType, OptConfigType, OptMultiConfig,
                         OptSampleList, SampleList, add_prefix)
from torch import Tensor, nn

from ..data_preprocessor import BRANCHES

STUDENT, TEACHER = 'student', 'teacher'


@MODELS.register_module()
class MeanTeacherSegmentor(BaseSegmentor):
    """Student + EMA teacher around any mmseg segmentor (method section 6).

    The student is built from ``segmentor``, a plain mmseg segmentor config
    (e.g. an ``EncoderDecoder`` with any backbone and decode head). The
    teacher is a copy of it that the optimizer never touches: its parameters
    do not require gradients, it is updated only by
    :class:`~mmseg_u2pl.engine.hooks.MeanTeacherHook`, and it stays in eval
    mode although mmengine's train loops call ``model.train()``.

    Training batches come from :class:`~mmseg_u2pl.datasets.SemiDataset`
    through :class:`SemiSegDataPreProcessor`: ``inputs`` and ``data_samples``
    are dicts with ``'labeled'`` and ``'unlabeled'`` branches. This base class
    trains the student on the labeled branch only (the supervised warm-up, and
    the supervised-only baseline); subclasses such as :class:`U2PL` add the
    semi-supervised terms in :meth:`semi_loss`.

    ``predict`` / ``_forward`` use the network named by
    ``semi_test_cfg.predict_on`` (``'teacher'`` by default). A checkpoint
    holds both networks (``student.*``, ``teacher.*``); loading a plain mmseg
    checkpoint (``load_from``) fills both.

    Args:
        segmentor (ConfigType): Config of the student segmentor.
        data_preprocessor (OptConfigType): Defaults to a
            ``SemiSegDataPreProcessor`` with the settings of
            ``segmentor.data_preprocessor``.
        semi_train_cfg (OptConfigType): Semi-supervised training settings
            (used by subclasses). Defaults to None.
        semi_test_cfg (OptConfigType): ``dict(predict_on='teacher')`` by
            default.
        init_cfg (OptMultiConfig): Initialisation config. Defaults to None.

    Example:
        >>> model = dict(
        ...     type='MeanTeacherSegmentor',
        ...     segmentor=dict(type='EncoderDecoder', ...),  # any mmseg model
        ...     semi_test_cfg=dict(predict_on='teacher'))
        >>> custom_hooks = [dict(type='MeanTeacherHook', warmup_iters=100)]
    """

    #: keys of ``semi_train_cfg`` this class understands (subclasses extend)
    semi_train_keys = ()
    semi_test_keys = ('predict_on', )

    def __init__(self,
                 segmentor: ConfigType,
                 data_preprocessor: OptConfigType = None,
                 semi_train_cfg: OptConfigType = None,
                 semi_test_cfg: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(
            data_preprocessor=self._build_data_preprocessor(
                data_preprocessor, segmentor),
            init_cfg=init_cfg)
        self.semi_train_cfg = self._check_cfg('semi_train_cfg', semi_train_cfg,
                                              self.semi_train_keys)
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
        self.extend_student(self.student)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        #: set by MeanTeacherHook before every training iteration
        self.semi_active: Optional[bool] = None
        self._register_load_state_dict_pre_hook(self._fill_from_plain_ckpt)

    @staticmethod
    def _build_data_preprocessor(cfg: OptConfigType,
                                 segmentor: ConfigType) -> nn.Module:
        """A ``SemiSegDataPreProcessor``, also from a plain mmseg config.

        Without a config, the student's ``data_preprocessor`` settings are
        used; a plain ``SegDataPreProcessor`` config (e.g. the top-level
        ``data_preprocessor`` of an mmseg base config, which mmengine's
        Runner injects into ``model``) is wrapped with the same settings.
        """
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

    def extend_student(self, student: nn.Module) -> None:
        """Add modules to the student before the teacher is copied from it.

        Modules added here (e.g. a representation head) belong to both
        networks and are averaged by the EMA.
        """

    # ------------------------------------------------------------------
    # weights
    # ------------------------------------------------------------------
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

    # ------------------------------------------------------------------
    # modes
    # ------------------------------------------------------------------
    def train(self, mode: bool = True) -> 'MeanTeacherSegmentor':
        """Set train mode for everything but the teacher (always eval)."""
        super().train(mode)
        self.teacher.eval()
        return self

    @property
    def predictor(self) -> nn.Module:
        """The network used by ``predict`` and ``_forward``."""
        return getattr(self, self.semi_test_cfg['predict_on'])

    # ------------------------------------------------------------------
    # inference: delegate to the predictor
    # ------------------------------------------------------------------
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

    # ------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------
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
        if self.semi_active is None:
            raise RuntimeError(
                f'{type(self).__name__} does not know whether the '
                'supervised warm-up is over: add '
                '`custom_hooks = [dict(type="MeanTeacherHook", ...)]` to the '
                'config.')
        if not self.semi_active:
            return self.supervised_loss(inputs['labeled'],
                                        data_samples['labeled'])
        return self.semi_loss(inputs, data_samples)

    def supervised_loss(self, inputs: Tensor,
                        data_samples: SampleList) -> dict:
        """The student's own mmseg losses on labeled images (``sup.*``)."""
        return add_prefix(self.student.loss(inputs, data_samples), 'sup')

    def semi_loss(self, inputs: Dict[str, Tensor],
                  data_samples: Dict[str, SampleList]) -> dict:
        """Losses after the warm-up. The base class stays supervised."""
        return self.supervised_loss(inputs['labeled'], data_samples['labeled'])

    @staticmethod
    def train_progress() -> tuple:
        """``(cur_iter, max_iters)`` of the running train loop."""
        hub = MessageHub.get_current_instance()
        cur_iter, max_iters = hub.get_info('iter'), hub.get_info('max_iters')
        if cur_iter is None or not max_iters:
            raise RuntimeError(
                'The training progress (iter / max_iters) is unknown; train '
                'with an mmengine Runner (its RuntimeInfoHook records it).')
        return cur_iter, max_iters
