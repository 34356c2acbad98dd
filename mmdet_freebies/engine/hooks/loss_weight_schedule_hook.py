"""Scheduled loss weights: the adaptive weight strategy of the face-detection
training-failure study (classification first, then a rising localization
weight)."""
import math
import warnings
from typing import List, Optional, Sequence

from mmengine.hooks import Hook

from mmdet.registry import HOOKS

from ...utils.checks import is_real
from .guided_loss_scaling import GuidedLossScaling
from .utils import unwrap_detector

_POLICIES = ('linear', 'cosine', 'step')


def _check_schedule(i: int, s: dict) -> dict:
    """Validate one schedule entry; return it with defaults filled in."""
    where = f'schedules[{i}]'
    if not isinstance(s, dict) or not isinstance(s.get('loss'), str):
        raise ValueError(f"{where} must be a dict with a 'loss' module path "
                         f"such as 'bbox_head.loss_bbox', got {s!r}")
    s = dict(s)
    policy = s.setdefault('policy', 'linear')
    if policy not in _POLICIES:
        raise ValueError(f'{where}.policy={policy!r}; choose one of '
                         f'{_POLICIES}')
    if policy == 'step':
        allowed = {'loss', 'policy', 'milestones', 'weights'}
        ms, ws = s.get('milestones'), s.get('weights')
        if not (isinstance(ms, (list, tuple)) and ms
                and isinstance(ws, (list, tuple))
                and len(ws) == len(ms) + 1):
            raise ValueError(
                f'{where}: a step schedule needs milestones and weights '
                'lists with len(weights) == len(milestones) + 1, got '
                f'milestones={ms!r}, weights={ws!r}')
        if not all(is_real(m) and m >= 0 for m in ms) or \
                list(ms) != sorted(ms):
            raise ValueError(f'{where}.milestones={ms!r} must be sorted '
                             'numbers >= 0 (iterations or epochs)')
    else:
        allowed = {'loss', 'policy', 'begin', 'end', 'from_weight',
                   'to_weight'}
        for key in ('end', 'from_weight', 'to_weight'):
            if key not in s:
                raise ValueError(f'{where}: a {policy} schedule needs '
                                 f'{key!r}, got {s!r}')
        s.setdefault('begin', 0)
        for key in ('begin', 'end'):
            if not is_real(s[key]) or not 0 <= s[key] < math.inf:
                raise ValueError(f'{where}.{key}={s[key]!r} must be a '
                                 'finite number >= 0 (iterations or '
                                 'epochs)')
        if not s['end'] > s['begin']:
            raise ValueError(f"{where}: end={s['end']!r} must exceed "
                             f"begin={s['begin']!r}")
    unknown = set(s) - allowed
    if unknown:
        raise ValueError(f'{where}: unknown keys {sorted(unknown)} for '
                         f'policy {policy!r}; allowed: {sorted(allowed)}')
    weights = ([(f'weights[{j}]', w) for j, w in enumerate(s['weights'])]
               if policy == 'step' else
               [(k, s[k]) for k in ('from_weight', 'to_weight')])
    for key, w in weights:
        if not is_real(w) or not 0 <= w < math.inf:
            raise ValueError(f'{where}.{key}={w!r} must be a finite number '
                             '>= 0 (a loss weight)')
    return s


def scheduled_weight(s: dict, t: float) -> float:
    """The weight of schedule ``s`` at time ``t`` (iterations or epochs)."""
    if s['policy'] == 'step':
        return float(s['weights'][sum(t >= m for m in s['milestones'])])
    frac = min(max((t - s['begin']) / (s['end'] - s['begin']), 0.0), 1.0)
    if s['policy'] == 'cosine':
        frac = (1 - math.cos(math.pi * frac)) / 2
    return s['from_weight'] + frac * (s['to_weight'] - s['from_weight'])


@HOOKS.register_module()
class LossWeightScheduleHook(Hook):
    """Set the ``loss_weight`` of named loss modules from a schedule.

    The face-detection training-failure study trains classification first
    and raises the localization weight later (its "adaptive weight
    strategy"). Each entry of ``schedules`` names a loss module by its path
    in the detector (``bbox_head.loss_bbox``, ``rpn_head.loss_cls``,
    ``roi_head.bbox_head.loss_bbox``) and a policy:

    * ``linear`` / ``cosine``: ``from_weight`` until ``begin``, a linear or
      half-cosine ramp to ``to_weight`` at ``end``, ``to_weight`` after;
    * ``step``: ``weights[k]`` after ``k`` of the sorted ``milestones``
      have been passed.

    The weight is recomputed from ``runner.iter`` before every iteration,
    never accumulated, so a resumed run uses exactly the weights of an
    uninterrupted one. Each weight is also logged as the scalar
    ``train/weight/<loss path>`` (named apart from ``loss*`` keys, which
    the ablation tools sum as losses; the text log averages it over the
    logger's window like every key containing ``loss``).

    Example:
        >>> custom_hooks = [dict(
        ...     type='LossWeightScheduleHook', by_epoch=True,
        ...     schedules=[dict(loss='bbox_head.loss_bbox', policy='cosine',
        ...                     begin=0, end=3, from_weight=0.1,
        ...                     to_weight=1.0)])]

    Args:
        schedules (Sequence[dict]): One dict per loss term, see above.
        by_epoch (bool): Whether ``begin``, ``end`` and ``milestones`` count
            epochs (converted with the train dataloader's length, fractional
            within an epoch) or iterations. Defaults to False.
    """

    priority = 'NORMAL'

    def __init__(self, schedules: Sequence[dict],
                 by_epoch: bool = False) -> None:
        # one dict would be iterated as its key strings
        if not isinstance(schedules, (list, tuple)):
            raise TypeError(
                'LossWeightScheduleHook: schedules must be a list of dicts, '
                f'got a {type(schedules).__name__}: schedules={schedules!r}'
                + ('; wrap it in a list' if isinstance(schedules, dict)
                   else ''))
        if not schedules:
            raise ValueError('LossWeightScheduleHook needs at least one '
                             'entry in schedules')
        self.schedules: List[dict] = [
            _check_schedule(i, s) for i, s in enumerate(schedules)]
        paths = [s['loss'] for s in self.schedules]
        repeated = sorted({p for p in paths if paths.count(p) > 1})
        if repeated:
            raise ValueError(f'LossWeightScheduleHook: more than one '
                             f'schedule for {repeated}; the weight of a '
                             'loss comes from one schedule')
        if not isinstance(by_epoch, bool):
            raise ValueError('LossWeightScheduleHook: by_epoch must be True '
                             f'or False, got {by_epoch!r}')
        self.by_epoch = by_epoch
        self._iters_per_epoch: Optional[int] = None

    @staticmethod
    def _loss_module(runner, path: str):
        model = unwrap_detector(runner.model)
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise ValueError(
                f'LossWeightScheduleHook: the model has no module {path!r} '
                f'(e.g. bbox_head.loss_bbox)') from None
        if not hasattr(module, 'loss_weight'):
            raise ValueError(
                f'LossWeightScheduleHook: {path!r} ({type(module).__name__}) '
                'has no loss_weight attribute')
        return module

    def before_train(self, runner) -> None:
        """Check every path now, not at the first iteration; warn when
        GuidedLossScaling would undo the schedules."""
        for s in self.schedules:
            self._loss_module(runner, s['loss'])
        if any(isinstance(h, GuidedLossScaling) for h in runner.hooks):
            warnings.warn(
                'LossWeightScheduleHook with GuidedLossScaling: the latter '
                'rescales each classification loss to its (scheduled) box '
                'loss every iteration, so a schedule on a classification '
                'loss has no effect, one on a box loss scales the whole '
                'loss, a box weight of 0 drops the classification loss, and '
                'freeze_after freezes the ratio of the early weights. Use '
                'one of the two.')
        if self.by_epoch:
            self._iters_per_epoch = len(runner.train_dataloader)

    def current_time(self, runner) -> float:
        """Progress in the unit of the schedules (iterations or epochs)."""
        if self.by_epoch:
            return runner.iter / self._iters_per_epoch
        return float(runner.iter)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        t = self.current_time(runner)
        for s in self.schedules:
            weight = scheduled_weight(s, t)
            self._loss_module(runner, s['loss']).loss_weight = weight
            runner.message_hub.update_scalar(
                f"train/weight/{s['loss']}", weight)
