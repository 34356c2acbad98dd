"""Guided loss scaling (GLS) from Sampling-Free.

Chen et al., "Is Heuristic Sampling Necessary in Training Deep Object
Detectors?" (IEEE TIP 2021), Sec. III-C, Eq. (6): with plain cross-entropy
and no sampling, the classification loss of a head is rescaled so that it
equals that head's regression loss in value::

    L = L_reg + r * L_cls,   r = stop_gradient(L_reg / L_cls)

GLS only rescales entries of the detector's loss dict. It is therefore a
hook, not a model change: :class:`GuidedLossScaling` registers a PyTorch
forward hook on the unwrapped detector that post-processes the dict returned
by ``forward(mode='loss')`` before ``parse_losses`` sums it. The model's
``state_dict`` and its predictions are exactly those of the plain detector,
it works under ``MMDistributedDataParallel`` (whose ``train_step`` runs the
inner module's forward) and it composes with any head that returns the
standard mmdet loss keys. Turning it on is one config line::

    custom_hooks = [dict(type='GuidedLossScaling')]
"""
import copy
import logging
import math
import warnings
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from torch import Tensor

from mmdet.registry import HOOKS

from ...utils.checks import is_int, is_real
from ...utils.loss_keys import head_and_term
from .utils import unwrap_detector

LossValue = Union[Tensor, List[Tensor]]
GroupSpec = Union[str, dict]

PRESETS = ('rpn', 'roi', 'dense', 'yolov3')
GUIDES = ('bbox', 'mean')
_GUIDE = 'mean'  # the hook's default; another needs a 'dense' group
_REDUCES = ('sum', 'mean')
# The official code's factor of the RoI group.
_ROI_FACTOR = 2.0
# Quality branches that the 2021 code averages with the box loss.
_QUALITY_KEYS = ('loss_centerness', 'loss_iou')
# A batch without positives drops its classification loss by design; this
# many in a row means a regression loss that is always 0 (a loss weight of
# 0, say), and the head never learns to classify.
_ZERO_RUN = 50


def _total(value: LossValue) -> Tensor:
    """Detached float32 value of a loss entry, as ``parse_losses`` sums it.

    Per-level lists are summed (each entry reduced by ``mean`` first, like
    ``BaseModel.parse_losses``). float32 keeps the ratio exact under AMP.
    """
    if isinstance(value, Tensor):
        return value.detach().float().mean()
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, Tensor) for v in value):
        return sum(v.detach().float().mean() for v in value)
    raise TypeError('GuidedLossScaling expects a tensor or a non-empty list '
                    f'of tensors per loss key, got {type(value).__name__}')


def _check_freeze_after(freeze_after: int) -> None:
    if not is_int(freeze_after) or freeze_after < 0:
        raise ValueError('GuidedLossScaling: freeze_after must be an int '
                         f'>= 0, got {freeze_after!r}')


def _unused_roi_factor(roi_factor: float, groups: str) -> str:
    return (f'GuidedLossScaling: roi_factor={roi_factor!r} has no effect: '
            f"{groups} has no 'roi' preset (a group dict sets its own "
            'factor)')


def _unused_guide(guide: str, groups: str) -> str:
    return (f'GuidedLossScaling: guide={guide!r} has no effect: {groups} '
            "has no 'dense' preset (a group dict names its own reg keys)")


def _scale(value: LossValue, ratio: Tensor) -> LossValue:
    """``value * ratio`` in the ratio's float32 at least: a 0-d ratio alone
    would not promote a half-precision entry with dimensions, and a large
    ratio could overflow it."""
    if isinstance(value, Tensor):
        return value.to(torch.promote_types(value.dtype, ratio.dtype)) * ratio
    return [_scale(v, ratio) for v in value]


class GuidedLossScaler:
    """The GLS arithmetic on a loss dict; usable without a runner.

    Each group names classification keys ``cls`` and regression keys ``reg``.
    Per group, ``r = factor * reduce(L_reg) / sum(L_cls)`` (per-level lists
    summed first) and every ``cls`` entry is multiplied by the detached ``r``.
    The ratio is added to the dict as ``gls_ratio_<name>``, which
    ``parse_losses`` logs but does not add to the total (no ``loss`` in it).

    A ratio that is not finite or not positive (no positives in the batch:
    ``L_reg = 0``; or ``L_cls = 0``) becomes 0: the batch's classification
    loss is dropped, as the official 2020 code does for a batch without
    positives (a ratio carried over from another batch would meet an
    ``L_cls`` that mmdet then normalises by the number of images instead of
    positives, a spike of about the previous positive count over the batch
    size). A frozen ratio (``freeze_after``) applies to every batch, as in
    the 2021 code. All of this stays on the device: no host synchronisation
    per iteration.

    Args:
        groups (list[dict]): Resolved groups, each ``dict(name, cls, reg,
            factor=1.0, reduce='sum', freeze=True)``; ``freeze=False`` keeps
            the group's per-iteration ratio under ``freeze_after``.
        sync (bool): Average the valid ratios across ranks
            (``mmengine.dist.all_reduce``) so every rank with positives
            scales alike (a rank without drops its classification loss).
            Defaults to False.
        freeze_after (int): The 2021 variant: use per-iteration ratios for
            this many iterations, then freeze the ratio of each group with
            ``freeze`` at the mean of its valid warm-up ratios over all ranks
            (summed by a small all-reduce per warm-up iteration, with or
            without ``sync``), so every rank and a resumed run use the same
            ratio; a group with no valid warm-up ratio freezes at its first
            valid one, with a warning. 0 keeps the per-iteration ratio of
            the paper. Defaults to 0.
    """

    def __init__(self,
                 groups: Sequence[dict],
                 sync: bool = False,
                 freeze_after: int = 0) -> None:
        _check_freeze_after(freeze_after)
        self.groups = self._check_groups(groups)
        names = [g['name'] for g in self.groups]
        # the groups whose ratio freeze_after freezes
        self._freezing = [g['name'] for g in self.groups
                          if freeze_after and g['freeze']]
        if freeze_after and not self._freezing:
            warnings.warn(
                f'GuidedLossScaling: freeze_after={freeze_after} has no '
                f'effect: no group of {names} freezes (the rpn and roi '
                'presets keep per-iteration ratios, as the 2021 code)')
        self.sync = sync
        self.freeze_after = freeze_after
        self.num_iters = 0
        self._warmup_sum: Dict[str, Tensor] = {}
        self._warmup_count: Dict[str, Tensor] = {}
        self.frozen: Dict[str, Tensor] = {}

    @classmethod
    def _check_groups(cls, groups: Sequence[dict]) -> List[dict]:
        """Each group checked; no two share a name or a loss key."""
        groups = [cls._check_group(g) for g in groups]
        if not groups:
            raise ValueError('GuidedLossScaling: no group to scale')
        names = [g['name'] for g in groups]
        if len(set(names)) != len(names):
            raise ValueError(f'GuidedLossScaling: duplicate group names '
                             f'{names}')
        keys = [k for g in groups for k in g['cls'] + g['reg']]
        clashes = sorted({k for k in keys if keys.count(k) > 1})
        if clashes:
            raise ValueError('GuidedLossScaling: loss keys used by more than '
                             f'one group or role: {clashes}')
        return groups

    @staticmethod
    def _check_group(group: dict) -> dict:
        group = dict(group)
        unknown = set(group) - {'name', 'cls', 'reg', 'factor', 'reduce',
                                'freeze'}
        if unknown:
            raise KeyError(f'GuidedLossScaling group {group!r}: unknown keys '
                           f'{sorted(unknown)}')
        name = group.get('name')
        if not isinstance(name, str) or not name or 'loss' in name:
            raise ValueError('GuidedLossScaling group name must be a '
                             "non-empty str without 'loss' (it becomes the "
                             f'log key gls_ratio_<name>), got {name!r}')
        for role in ('cls', 'reg'):
            keys = group.get(role)
            if isinstance(keys, str):
                keys = [keys]
            if not keys or not all(isinstance(k, str) for k in keys):
                raise ValueError(f'GuidedLossScaling group {name!r}: {role} '
                                 'must be a non-empty list of loss keys, got '
                                 f'{group.get(role)!r}')
            group[role] = list(keys)
        factor = group.setdefault('factor', 1.0)
        # (NaN or inf would make every ratio invalid: the class loss dropped)
        if not is_real(factor) or not 0 < factor < math.inf:
            raise ValueError(f'GuidedLossScaling group {name!r}: factor must '
                             f'be a finite number > 0, got {factor!r}')
        if not isinstance(group.setdefault('freeze', True), bool):
            raise ValueError(f'GuidedLossScaling group {name!r}: freeze must '
                             f"be True or False, got {group['freeze']!r}")
        if group.setdefault('reduce', 'sum') not in _REDUCES:
            raise ValueError(f'GuidedLossScaling group {name!r}: reduce must '
                             f"be one of {_REDUCES}, got {group['reduce']!r}")
        return group

    def _raw_ratios(self, losses: dict) -> Tensor:
        ratios = []
        for g in self.groups:
            missing = [k for k in g['cls'] + g['reg'] if k not in losses]
            if missing:
                raise KeyError(
                    f'GuidedLossScaling group {g["name"]!r} needs loss keys '
                    f'{missing}, but the model returned {sorted(losses)}')
            cls = sum(_total(losses[k]) for k in g['cls'])
            reg = sum(_total(losses[k]) for k in g['reg'])
            if g['reduce'] == 'mean':
                reg = reg / len(g['reg'])
            ratios.append(g['factor'] * reg / cls)
        return torch.stack(ratios)

    def _sync(self, ratios: Tensor, valid: Tensor) -> tuple:
        """Mean of the valid ratios over ranks; invalid on all -> invalid."""
        if not self.sync or get_world_size() == 1:
            return ratios, valid
        stats = torch.stack(
            [torch.where(valid, ratios, torch.zeros_like(ratios)),
             valid.float()])
        all_reduce(stats, op='sum')
        count = stats[1]
        return stats[0] / count.clamp(min=1), count > 0

    def __call__(self, losses: dict) -> dict:
        """Return a new loss dict with the classification entries scaled."""
        ratios = self.compute_ratios(losses)
        out = dict(losses)
        for g, ratio in zip(self.groups, ratios):
            for key in g['cls']:
                out[key] = _scale(losses[key], ratio)
            out[f'gls_ratio_{g["name"]}'] = ratio
        return out

    def compute_ratios(self, losses: dict) -> Tensor:
        """Detached float32 ratio per group (updates the scaler's state)."""
        ratios = self._raw_ratios(losses)
        if len(self.frozen) == len(self.groups):
            # (.to: a resumed run restores the frozen ratios on the CPU)
            return torch.stack(
                [self.frozen[g['name']].to(ratios) for g in self.groups])
        own = torch.isfinite(ratios) & (ratios > 0)
        ratios, valid = self._sync(ratios, own)
        self.num_iters += 1
        if len(self.frozen) < len(self._freezing):
            self._accumulate(ratios, valid)
        # this batch has no positives (or a broken L_cls): no cls loss
        ratios = torch.where(own, ratios, torch.zeros_like(ratios))
        # the groups without freeze, or not frozen yet, stay per iteration
        return torch.stack([
            self.frozen.get(g['name'], ratio).to(ratio)
            for g, ratio in zip(self.groups, ratios)
        ])

    def _accumulate(self, ratios: Tensor, valid: Tensor) -> None:
        names = [n for n in self._freezing if n not in self.frozen]
        index = [i for i, g in enumerate(self.groups) if g['name'] in names]
        stats = torch.stack([
            torch.where(valid, ratios, torch.zeros_like(ratios)),
            valid.float()
        ])[:, index]
        if get_world_size() > 1:
            # Summed over the ranks every iteration, not at the freeze, so
            # that the sums rank 0 checkpoints are those of all ranks and a
            # run resumed in the warm-up freezes the ratio an uninterrupted
            # run does; one frozen ratio on every rank, with or without sync
            all_reduce(stats, op='sum')
        for name, total, count in zip(names, *stats):
            zero = total.new_zeros(())
            self._warmup_sum[name] = self._warmup_sum.get(
                name, zero).to(total) + total
            self._warmup_count[name] = self._warmup_count.get(
                name, zero).to(count) + count
        if self.num_iters < self.freeze_after:
            return
        stats = torch.stack([
            torch.stack([self._warmup_sum[n] for n in names]),
            torch.stack([self._warmup_count[n] for n in names])
        ])
        # A group without any valid ratio yet (its regression loss was 0
        # throughout, e.g. under a loss-weight ramp from 0) would freeze at
        # the fallback 0 and never learn to classify: it freezes at its
        # first valid ratio instead. Deciding that reads the counts on the
        # host, at the freeze and in the iterations such a group waits.
        counts = stats[1].tolist()
        now = {n: total / count for n, total, count, c
               in zip(names, stats[0], stats[1], counts) if c > 0}
        self.frozen.update(now)
        if now:
            print_log(
                'GuidedLossScaling: ratios frozen after '
                f'{self.num_iters} iterations: ' + ', '.join(
                    f'{k}={float(v):.4g}' for k, v in now.items()),
                logger='current')
        waiting = [n for n, c in zip(names, counts) if c == 0]
        if waiting and self.num_iters == self.freeze_after:
            print_log(
                f'GuidedLossScaling: no valid ratio for {waiting} in the '
                f'first {self.freeze_after} iterations (a regression loss '
                'of 0 throughout); their classification loss is dropped '
                'until the first valid ratio, which they then freeze at',
                logger='current', level=logging.WARNING)

    def state_dict(self) -> dict:
        """Scaler state for checkpoints (kept out of the model)."""
        return dict(
            num_iters=self.num_iters,
            frozen={k: float(v) for k, v in self.frozen.items()},
            warmup_sum={k: float(v) for k, v in self._warmup_sum.items()},
            warmup_count={k: float(v)
                          for k, v in self._warmup_count.items()})

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (on resume)."""
        to_t = lambda d: {k: torch.tensor(v) for k, v in d.items()}  # noqa
        self.num_iters = int(state['num_iters'])
        self.frozen = to_t(state['frozen'])
        self._warmup_sum = to_t(state['warmup_sum'])
        self._warmup_count = to_t(state['warmup_count'])


def preset_group(preset: str,
                 guide: str = 'mean',
                 roi_factor: float = _ROI_FACTOR,
                 loss_keys: Optional[Sequence[str]] = None) -> dict:
    """The group of a named head type.

    Args:
        preset (str): ``'rpn'`` (``loss_rpn_cls`` by ``loss_rpn_bbox``),
            ``'roi'`` (``loss_cls`` by ``loss_bbox``, times ``roi_factor``),
            ``'dense'`` (one-stage heads: ``loss_cls`` by ``loss_bbox``, and
            with ``guide='mean'`` by the mean of ``loss_bbox`` and the
            quality loss ``loss_centerness`` or ``loss_iou`` where the head
            returns one) or ``'yolov3'`` (``loss_cls`` and ``loss_conf`` by
            ``loss_xy + loss_wh``).
        guide (str): ``'bbox'`` or ``'mean'``, see ``'dense'``.
        roi_factor (float): The RoI head's factor.
        loss_keys (Sequence[str], optional): The keys the model returns;
            needed by ``'dense'`` with ``guide='mean'``.
    """
    # the 2021 code freezes the dense heads' ratio only: the RPN and RoI
    # heads keep a per-iteration ratio
    if preset == 'rpn':
        return dict(name='rpn', cls=['loss_rpn_cls'], reg=['loss_rpn_bbox'],
                    freeze=False)
    if preset == 'roi':
        return dict(name='roi', cls=['loss_cls'], reg=['loss_bbox'],
                    factor=roi_factor, freeze=False)
    if preset == 'yolov3':
        return dict(name='cls', cls=['loss_cls', 'loss_conf'],
                    reg=['loss_xy', 'loss_wh'], reduce='sum')
    if preset == 'dense':
        reg = ['loss_bbox']
        if guide == 'mean':
            reg += [k for k in _QUALITY_KEYS if k in (loss_keys or ())]
        return dict(name='cls', cls=['loss_cls'], reg=reg, reduce='mean')
    raise ValueError(f'GuidedLossScaling: unknown preset {preset!r}, '
                     f'expected one of {PRESETS} or a dict')


@HOOKS.register_module()
class GuidedLossScaling(Hook):
    """Guided loss scaling of Sampling-Free (Chen et al., TIP 2021, Eq. 6).

    Rescales each head's classification loss to its regression loss in
    value, ``r = (L_reg / L_cls).detach()``, every iteration. The RPN is
    guided by its own box loss; the RoI head by its own box loss times
    ``roi_factor=2``, as the official code does "to keep consistency with
    the biased sampling method" (whose RoI classification loss stays above
    its box loss; see docs/sampling_free.md).

    The hook changes nothing in the model: no parameter, buffer or method
    is added (the ratio state lives in the hook and in the checkpoint's
    ``guided_loss_scaling`` entry, not in ``state_dict``), so a checkpoint
    loads strictly into the plain mmdet config and predicts identically.

    Args:
        groups (str | list): ``'auto'`` picks the groups from the model:
            ``'rpn'`` if it has an RPN, ``'roi'`` if it has a RoI head,
            ``'yolov3'`` for ``YOLOV3Head`` and ``'dense'`` for any other
            ``bbox_head``. A list may mix preset names (``'rpn'``, ``'roi'``,
            ``'dense'``, ``'yolov3'``) and explicit groups
            ``dict(name, cls=[keys], reg=[keys], factor=1.0, reduce='sum')``,
            e.g. ``['rpn']`` to guide only the RPN of a two-stage detector.
            Defaults to ``'auto'``.
        guide (str): Which losses guide the ``'dense'`` group of FCOS, ATSS
            and PAA: ``'mean'`` (the mean of the box loss and the
            centerness/IoU loss, as the official 2021 code that produced the
            paper's FCOS/ATSS/PAA numbers) or ``'bbox'`` (the box loss alone,
            the literal Eq. 6). No effect on heads without a quality branch;
            ``'bbox'`` without a ``'dense'`` group is an error.
            Defaults to ``'mean'``.
        roi_factor (float): Factor of the RoI group; any other value than
            the default is an error without a ``'roi'`` group.
            Defaults to 2.0.
        sync (bool): Average the ratio across ranks every iteration (one
            small all-reduce). Defaults to False.
        freeze_after (int): 2021 variant: freeze the ratio at the mean of the
            first ``freeze_after`` iterations (the official code uses 100);
            as there, the RPN and RoI groups stay per iteration. Its
            learnable uncertainty weights are not implemented: they are
            parameters and would add ``state_dict`` keys. Defaults to 0
            (per-iteration ratio, the paper's rule).

    A group whose ratio stays 0 for 50 iterations in a row (its regression
    loss is 0 in every batch, so its classification loss is dropped in
    every batch) is warned about once.
    """

    priority = 'NORMAL'

    def __init__(self,
                 groups: Union[str, Sequence[GroupSpec]] = 'auto',
                 guide: str = _GUIDE,
                 roi_factor: float = _ROI_FACTOR,
                 sync: bool = False,
                 freeze_after: int = 0) -> None:
        if guide not in GUIDES:
            raise ValueError(f'GuidedLossScaling: guide must be one of '
                             f'{GUIDES}, got {guide!r}')
        if groups != 'auto':
            if isinstance(groups, (str, dict)) or not groups:
                raise ValueError("GuidedLossScaling: groups must be 'auto' "
                                 'or a non-empty list of preset names and '
                                 f'dicts, got {groups!r}')
            if 'dense' in groups and 'yolov3' in groups:
                raise ValueError(
                    "GuidedLossScaling: groups has both the 'dense' and the "
                    "'yolov3' preset, which are both named 'cls': a "
                    f'detector has one of them, got groups={groups!r}')
            for g in groups:
                if isinstance(g, str) and g not in PRESETS:
                    raise ValueError(f'GuidedLossScaling: unknown preset '
                                     f'{g!r}, expected one of {PRESETS}')
                if not isinstance(g, (str, dict)):
                    raise TypeError(f'GuidedLossScaling: group {g!r} must '
                                    'be a preset name or a dict')
            # now, not at the first iteration: presets resolve to fixed
            # names and keys (the dense quality keys are added later)
            GuidedLossScaler._check_groups([
                preset_group(g, 'bbox') if isinstance(g, str) else g
                for g in groups])
        if not is_real(roi_factor) or not 0 < roi_factor < math.inf:
            raise ValueError('GuidedLossScaling: roi_factor must be a finite '
                             f'number > 0, got {roi_factor!r}')
        if (roi_factor != _ROI_FACTOR and groups != 'auto'
                and 'roi' not in groups):
            raise ValueError(
                _unused_roi_factor(roi_factor, f'groups={groups!r}'))
        if guide != _GUIDE and groups != 'auto' and 'dense' not in groups:
            raise ValueError(_unused_guide(guide, f'groups={groups!r}'))
        if not isinstance(sync, bool):
            raise ValueError('GuidedLossScaling: sync must be True or False, '
                             f'got sync={sync!r}')
        self.groups = groups if groups == 'auto' else list(groups)
        self.guide = guide
        self.roi_factor = roi_factor
        self.sync = sync
        self.freeze_after = freeze_after
        _check_freeze_after(freeze_after)
        # Groups are resolved on the first loss dict: the 'dense' group
        # depends on the keys the head returns.
        self.scaler: Optional[GuidedLossScaler] = None
        self._presets: List[GroupSpec] = []
        self._pending_state: Optional[dict] = None
        self._handle = None
        self._zero_runs: Dict[str, int] = {}  # group -> iterations at 0

    @staticmethod
    def auto_presets(model: torch.nn.Module) -> List[str]:
        """The preset names ``groups='auto'`` uses for ``model``."""
        presets = []
        if getattr(model, 'with_rpn', False):
            presets.append('rpn')
        if getattr(model, 'with_roi_head', False):
            presets.append('roi')
        head = getattr(model, 'bbox_head', None)
        if head is not None:
            names = [c.__name__ for c in type(head).__mro__]
            if 'YOLOV3Head' in names:
                presets.append('yolov3')
            elif 'RPNHead' in names:  # the single-stage RPN detector
                presets.append('rpn')
            else:
                presets.append('dense')
        if not presets:
            raise ValueError(
                'GuidedLossScaling: cannot infer the loss groups of '
                f'{type(model).__name__} (no rpn_head, roi_head or '
                'bbox_head); pass groups=[dict(name, cls, reg)] explicitly')
        return presets

    def attach(self, model: torch.nn.Module) -> None:
        """Scale the loss dict of ``model`` (a detector or its wrapper)."""
        model = unwrap_detector(model)
        self.detach()
        self._presets = (
            self.auto_presets(model) if self.groups == 'auto' else self.groups)
        auto = (f"groups='auto' ({self._presets} for "
                f'{type(model).__name__})')
        if self.roi_factor != _ROI_FACTOR and 'roi' not in self._presets:
            raise ValueError(_unused_roi_factor(self.roi_factor, auto))
        if self.guide != _GUIDE and 'dense' not in self._presets:
            raise ValueError(_unused_guide(self.guide, auto))
        self._handle = model.register_forward_hook(
            self._forward_hook, with_kwargs=True)

    def detach(self) -> None:
        """Remove the forward hook (the model is plain again)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _build_scaler(self, losses: dict) -> GuidedLossScaler:
        groups = [
            preset_group(g, self.guide, self.roi_factor, list(losses))
            if isinstance(g, str) else copy.deepcopy(g)
            for g in self._presets
        ]
        scaler = GuidedLossScaler(groups, self.sync, self.freeze_after)
        named = {k for g in scaler.groups for k in g['cls'] + g['reg']}
        # head_and_term also catches a cascade's stage keys (s0.loss_cls)
        unnamed = sorted(k for k in losses
                         if head_and_term(k)[0] is not None and k not in named)
        if unnamed:  # e.g. YOLOX's loss_obj, GFL's loss_dfl, loss_mask
            warnings.warn(
                f'GuidedLossScaling: loss keys {unnamed} are in no group: '
                'they are not scaled and enter no ratio; pass '
                'groups=[dict(name, cls=[...], reg=[...])] to include them')
        if self._pending_state is not None:
            scaler.load_state_dict(self._pending_state)
            self._pending_state = None
        print_log(
            'GuidedLossScaling groups: ' + '; '.join(
                f"{g['name']}: {'+'.join(g['cls'])} guided by "
                f"{g['reduce']}({', '.join(g['reg'])}) x {g['factor']}"
                for g in scaler.groups),
            logger='current')
        return scaler

    def _forward_hook(self, module, args, kwargs, output):
        mode = kwargs.get('mode', args[2] if len(args) > 2 else None)
        if mode != 'loss' or not isinstance(output, dict):
            return None
        if self.scaler is None:
            self.scaler = self._build_scaler(output)
        return self.scaler(output)

    def before_train(self, runner) -> None:
        self.attach(runner.model)

    def after_train(self, runner) -> None:
        self.detach()

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        """Warn once about a group whose ratio stayed 0 for ``_ZERO_RUN``
        iterations in a row. Reads the logged ratios, which mmengine's
        ``RuntimeInfoHook`` has already read on the host."""
        if self.scaler is None or not outputs:
            return
        for g in self.scaler.groups:
            name = g['name']
            ratio = outputs.get(f'gls_ratio_{name}')
            run = self._zero_runs.get(name, 0)
            if ratio is None or run < 0:  # not logged, or warned already
                continue
            run = run + 1 if float(ratio) == 0 else 0
            self._zero_runs[name] = run
            if run == _ZERO_RUN:
                self._zero_runs[name] = -1
                print_log(
                    f'GuidedLossScaling: the ratio of group {name!r} has '
                    f'been 0 for {_ZERO_RUN} iterations in a row, so '
                    f"{'+'.join(g['cls'])} is dropped in every batch: its "
                    f"guide {'+'.join(g['reg'])} is 0 (a loss weight of 0? "
                    'no positives?) or the ratio is not finite',
                    logger='current', level=logging.WARNING)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.scaler is not None:
            checkpoint['guided_loss_scaling'] = self.scaler.state_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('guided_loss_scaling')
        if state is None:
            return
        if not runner._resume:
            # mmengine calls this for `load_from` too: a fine-tune estimates
            # its own ratios instead of inheriting the old run's
            print_log(
                'GuidedLossScaling: load_from without resume, the '
                "checkpoint's ratios are not restored",
                logger='current')
            return
        if self.scaler is not None:
            self.scaler.load_state_dict(state)
        else:
            self._pending_state = state
