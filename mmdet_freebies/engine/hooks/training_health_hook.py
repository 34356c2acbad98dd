"""Training health monitor: cheap per-iteration signals and named failure
patterns, each with the remedy this pack ships."""
import logging
import math
import os.path as osp
import statistics
import warnings
from collections import deque
from typing import Deque, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.dist import (all_gather_object, all_reduce, barrier, get_rank,
                           get_world_size)
from mmengine.hooks import CheckpointHook, Hook
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.optim.scheduler.param_scheduler import INF
from torch import nn

from mmdet.registry import HOOKS

from ...utils.checks import is_int, is_real
from ...utils.loss_keys import head_and_term, loss_kind
from .utils import unwrap_detector

# Final classification layers of mmdet's heads, by attribute name.
CLS_LAYER_NAMES = ('retina_cls', 'conv_cls', 'atss_cls', 'rpn_cls', 'fc_cls',
                   'convs_pred')

# LR schedulers read as the warm-up when warmup_iters is None
WARMUP_SCHEDULERS = ('LinearLR', 'ConstantLR', 'QuadraticWarmupLR')

PATTERNS = ('non_finite', 'divergence', 'stagnation', 'collapse',
            'regression_domination', 'classification_domination')

# The remedies this pack ships, quoted in the messages.
REMEDIES = {
    'non_finite': [
        'raise warm-up (param_scheduler LinearLR end) or lower the lr',
        'clip gradients: optim_wrapper.clip_grad=dict(max_norm=35, '
        'norm_type=2)',
        'with CE on a dense head, start from the data prior: '
        'configs/retinanet_ce_obi.py (OptimalBiasInit)'],
    'divergence': [
        'raise warm-up (param_scheduler LinearLR end) or lower the lr',
        'enable OptimalBiasInit: configs/retinanet_ce_obi.py',
        'balance the losses with guided loss scaling: '
        'configs/retinanet_ce_sf.py'],
    'stagnation': [
        'raise the lr or check the data (tools/dataset_stats.py CONFIG)',
        'sweep the class:box weight ratio: tools/sweep_loss_weights.py'],
    'collapse': [
        'enable OptimalBiasInit: configs/retinanet_ce_obi.py',
        'use Sampling-Free (OBI + guided loss scaling): '
        'configs/retinanet_ce_sf.py, or focal loss: configs/retinanet_fl.py',
        'raise warm-up'],
    'regression_domination': [
        'lower the box loss weight: tools/sweep_loss_weights.py CONFIG '
        '--key model.bbox_head.loss_bbox.loss_weight',
        'classification first, box weight later: LossWeightScheduleHook, '
        'configs/retinanet_fl_adaptive_weight.py',
        'guided loss scaling: configs/retinanet_ce_sf.py'],
    'classification_domination': [
        'CE over all anchors: guided loss scaling with OptimalBiasInit, '
        'configs/retinanet_ce_sf.py (GLS alone: configs/retinanet_ce_gls.py)',
        'or focal loss: configs/retinanet_fl.py',
        'otherwise lower the classification loss weight: '
        'tools/sweep_loss_weights.py'],
}

_TITLES = {
    'non_finite': 'non-finite loss',
    'divergence': 'divergence',
    'stagnation': 'stagnation',
    'collapse': 'collapse to background',
    'regression_domination': 'regression domination',
    'classification_domination': 'classification domination',
}


class TrainingFailureError(RuntimeError):
    """Raised by ``TrainingHealthHook(action='stop')`` on a detection."""


def head_loss_ratios(log_vars: Dict[str, float]) -> Dict[str, float]:
    """Classification-to-regression loss ratio of each head.

    Keys are grouped by head: ``loss_rpn_*`` is the RPN, a stage prefix
    (``s0.loss_cls``) names a cascade stage, everything else is ``det``.
    Classification terms end in ``cls`` or ``conf``; regression terms are
    ``bbox``, ``xy``, ``wh``, ``iou``, ``centerness`` and ``dfl``. A head
    without a positive regression loss has no ratio.
    """
    sums: Dict[str, Dict[str, float]] = {}
    for key, value in log_vars.items():
        kind = loss_kind(key)
        if kind is not None:
            head = sums.setdefault(head_and_term(key)[0], dict(cls=0., reg=0.))
            head[kind] += float(value)
    return {head: s['cls'] / s['reg'] for head, s in sums.items()
            if s['reg'] > 0}


def _fg_scores(kind: str, out: torch.Tensor, num_classes: int,
               num_anchors: int) -> torch.Tensor:
    """Foreground probability of each anchor (or RoI) from raw logits."""
    if out.dim() == 4:  # (N, A * K, H, W) -> (N * H * W * A, K)
        n, _, h, w = out.shape
        out = out.reshape(n, num_anchors, -1, h, w).permute(0, 3, 4, 1, 2)
        out = out.reshape(-1, out.shape[-1])
    if kind == 'sigmoid':
        return out.sigmoid().amax(dim=-1)
    if kind == 'softmax':  # mmdet puts background last
        return 1 - out.softmax(dim=-1)[:, num_classes]
    return out[:, 4].sigmoid()  # yolo: objectness after xy, wh


@HOOKS.register_module()
class TrainingHealthHook(Hook):
    """Tell why a detector's training is failing and what to change.

    The face-detection training-failure study (SSD on WIDER FACE) shows
    early failures (high loss, background-only predictions, class and box
    losses out of balance) and middle ones (stalled classification); the
    Sampling-Free paper (Chen et al., 2020) names the gradient reaching the
    final classification layer as what decides success. This hook watches,
    every iteration and with no extra forward or backward:

    * ``health/ratio_<head>``: the classification-to-regression loss ratio
      of each head, from the losses the model already logs;
    * ``health/grad_norm_<layer>``: the L2 gradient norm of each final
      classification layer (``retina_cls``, ``conv_cls``, ``atss_cls``,
      ``rpn_cls``, ``fc_cls``, ``convs_pred``), read by a tensor hook
      (``register_hook``) on its parameters as each backward computes
      their gradient, before the optimizer wrapper zeroes them;
    * ``health/fg_mean``, ``health/fg_max``, ``health/fg_frac``: mean and
      max foreground probability over all anchors (or RoIs) of the batch,
      and the fraction above 0.5, from a forward hook on the layer, every
      ``score_interval`` iterations; with several layers (a two-stage
      detector's ``rpn_cls`` and ``fc_cls``) one set per layer, the key
      suffixed as the grad norm's (``health/fg_max_fc_cls``).

    The signals go to ``runner.message_hub`` as ``train/health/...`` scalars
    (so the mmengine log, ``scalars.json`` and TensorBoard show them), and
    feed these patterns:

    * ``non_finite``: a loss term is NaN or infinite (checked from the first
      iteration);
    * ``divergence``: the smoothed loss exceeds ``divergence_factor`` times
      its running minimum since warm-up;
    * ``stagnation`` (the study's early failure, "the loss stays high"):
      ``stagnation_window`` iterations after the warm-up, the smoothed
      loss has not fallen ``stagnation_rel`` below its level at the end of
      the warm-up. Judged once, in a run that starts within the warm-up
      (or is resumed from one that did): a healthy run's late plateau is
      no failure;
    * ``collapse``: every sampled max foreground score of a layer in
      ``window`` iterations is below ``collapse_score`` and the second half
      of the window does not exceed the first (a run that starts at a tiny
      prior and is learning rises);
    * ``regression_domination`` / ``classification_domination``: the median
      of a head's ratio over ``window`` iterations is below
      ``ratio_range[0]`` / above ``ratio_range[1]``.

    Except ``non_finite``, patterns are judged only after the warm-up (read
    from the LR schedulers unless ``warmup_iters`` is given) and after a
    full window. Each pattern is reported once, as a warning with the
    iteration, the evidence and this pack's remedies. With
    ``action='stop'`` the hook then saves ``health_stop_iter_<n>.pth`` in
    the work dir and raises :class:`TrainingFailureError`, so
    ``tools/train.py`` exits non-zero; it does so after ``LoggerHook``
    (which logs the iteration on its interval) and after the LR schedulers
    have stepped, as ``CheckpointHook`` saves, so that ``--resume``
    continues the schedule.

    The judging state (smoothed loss and its minimum, the windows) travels
    in the checkpoints (``training_health``, not the state dict), so a
    ``--resume``d run judges as the uninterrupted one would; the patterns
    are reported again if they persist. The stop checkpoint leaves it out:
    a run resumed from it, after a fix, is judged afresh. Only rank 0
    saves (mmengine's ``save_checkpoint`` runs on the master alone), so
    under DDP the ranks gather their states just before a
    ``CheckpointHook`` save (one ``all_gather_object`` per checkpoint, and
    per validation with ``save_best``, which may re-save the latest) and
    each rank resumes with its own (``training_health_per_rank``). Resumed
    with another number of ranks, every rank takes rank 0's, with a
    warning.

    Under DDP every rank judges its own losses, scores and (local)
    gradients; rank 0's are the ones logged. With ``action='stop'`` the
    ranks agree on stopping with one small all-reduce per iteration and
    stop at the same iteration.

    Args:
        action (str): 'warn' or 'stop'. Defaults to 'warn'.
        patterns (Sequence[str]): Patterns to check. Defaults to all of
            ``PATTERNS``.
        warmup_iters (int, optional): Iterations before patterns other than
            ``non_finite`` are judged. Defaults to None (the end of the
            LinearLR, ConstantLR or QuadraticWarmupLR warm-up that starts
            at 0 and raises the LR, epochs converted with the train
            dataloader's length; 0, with a warning, without one).
        window (int): Iterations a collapse or ratio must persist.
            Defaults to 50.
        smooth (int): Iterations averaged into the smoothed loss.
            Defaults to 10.
        divergence_factor (float): Defaults to 4.0.
        stagnation_window (int): Iterations after the warm-up within which
            the loss must fall. Defaults to 500.
        stagnation_rel (float): The fall, relative to the loss at the end
            of the warm-up, in (0, 1). Defaults to 0.01.
        collapse_score (float): Defaults to 1e-3, a tenth of the focal-loss
            init prior 0.01 where a healthy focal-loss run starts.
        ratio_range (Tuple[float, float]): Bounds of the window median of
            each head's cls/reg ratio. Defaults to (0.05, 5.0): focal loss
            measured 1.4-1.8 on the toy set, guided loss scaling
            (Sampling-Free) holds it at 1, while CE over all anchors starts
            near anchors x classes x prior / positives (toy at 128 px: 7-13;
            COCO: an estimated several hundred).
        head_ratio_ranges (dict, optional): Bounds for named heads instead
            of ``ratio_range``, by the names of ``health/ratio_<head>``:
            ``det`` (a one-stage head or a two-stage detector's RoI head),
            ``rpn``, a cascade's ``s0``, ``s1``... A head the model does
            not log is an error at the first iteration. The entries given
            are added to the built-in ``dict(rpn=(0.01, 100.0))``, and an
            ``rpn`` entry replaces it. Defaults to None, the built-in
            entry alone: the RPN's box loss covers only the
            few positives of its 256 sampled anchors, so a healthy RPN
            runs at ratios of 5 to 400 early on (toy Faster R-CNN, median
            about 19 in its first 40 iterations).
        score_interval (int): Iterations between score samples. Defaults
            to 5.
    """

    # after RuntimeInfoHook, before LoggerHook, which logs the signals; the
    # stop itself runs later, in _StopAfterSchedulers
    priority = 'NORMAL'

    def __init__(self,
                 action: str = 'warn',
                 patterns: Sequence[str] = PATTERNS,
                 warmup_iters: Optional[int] = None,
                 window: int = 50,
                 smooth: int = 10,
                 divergence_factor: float = 4.0,
                 stagnation_window: int = 500,
                 stagnation_rel: float = 0.01,
                 collapse_score: float = 1e-3,
                 ratio_range: Tuple[float, float] = (0.05, 5.0),
                 head_ratio_ranges: Optional[Dict[str, Tuple[float,
                                                          float]]] = None,
                 score_interval: int = 5) -> None:
        if action not in ('warn', 'stop'):
            raise ValueError(f"action must be 'warn' or 'stop', got "
                             f'{action!r}')
        if isinstance(patterns, str):
            raise ValueError(f'patterns must be a list of names, got '
                             f'{patterns!r}; e.g. [{patterns!r}]')
        if not isinstance(patterns, (list, tuple)):
            raise TypeError(f'patterns must be a list of names, got '
                            f'patterns={patterns!r}; [] judges nothing')
        unknown = [p for p in patterns if p not in PATTERNS]
        if unknown:
            raise ValueError(f'unknown patterns {unknown}; choose from '
                             f'{PATTERNS}')
        for name, value in (('window', window), ('smooth', smooth),
                            ('stagnation_window', stagnation_window),
                            ('score_interval', score_interval)):
            if not is_int(value) or value < 1:
                raise ValueError(f'{name} must be a positive int, got '
                                 f'{value!r}')
        if warmup_iters is not None and (not is_int(warmup_iters)
                                         or warmup_iters < 0):
            raise ValueError('warmup_iters must be None or an int >= 0, got '
                             f'{warmup_iters!r}')
        for name, value, ok in (
                ('divergence_factor', divergence_factor,
                 # (inf would silently switch the divergence check off)
                 is_real(divergence_factor)
                 and 1 < divergence_factor < math.inf),
                ('stagnation_rel', stagnation_rel,
                 is_real(stagnation_rel) and 0 < stagnation_rel < 1),
                ('collapse_score', collapse_score,
                 is_real(collapse_score) and 0 < collapse_score < 1)):
            if not ok:
                raise ValueError(f'{name}={value!r} is out of range: '
                                 'divergence_factor must be finite and > 1, '
                                 'stagnation_rel and collapse_score in '
                                 '(0, 1)')
        if 'collapse' in patterns and 2 * score_interval > window:
            # collapse compares two halves of a window's score samples
            raise ValueError(
                f'score_interval={score_interval} must be at most half of '
                f'window={window} to judge collapse (at least 2 score '
                "samples per window), or leave 'collapse' out of patterns")
        if not patterns:
            warnings.warn('TrainingHealthHook: patterns is empty; the '
                          'health signals are logged but nothing is judged')
        head_ratio_ranges = dict(head_ratio_ranges or {})
        for name, bounds in [('ratio_range', ratio_range)] + [
                (f'head_ratio_ranges[{k!r}]', v)
                for k, v in head_ratio_ranges.items()]:
            if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2
                    and all(is_real(b) for b in bounds)
                    and 0 < bounds[0] < bounds[1]):
                raise ValueError(f'{name} must be (low, high) with '
                                 f'0 < low < high, got {bounds!r}')
        # heads named by the user, checked against the model's loss keys
        # at the first iteration (they are not known before)
        self._named_heads = set(head_ratio_ranges)
        head_ratio_ranges = dict(dict(rpn=(0.01, 100.0)),
                                 **head_ratio_ranges)
        self.action = action
        self.patterns = tuple(patterns)
        self.warmup_iters = warmup_iters
        self.window = window
        self.smooth = smooth
        self.divergence_factor = divergence_factor
        self.stagnation_window = stagnation_window
        self.stagnation_rel = stagnation_rel
        self.collapse_score = collapse_score
        self.ratio_range = tuple(ratio_range)
        self.head_ratio_ranges = {k: tuple(v)
                                  for k, v in head_ratio_ranges.items()}
        self.score_interval = score_interval
        self.detections: List[dict] = []
        self._loaded: Optional[dict] = None  # the state --resume restores
        # (runner.iter, every rank's state) gathered for a checkpoint
        self._rank_states: Optional[Tuple[int, List[dict]]] = None
        self._saving_stop = False

    # ----------------------------------------------------------- set-up
    def before_train(self, runner) -> None:
        self.install(runner)
        if not self._layers:
            runner.logger.warning(
                'TrainingHealthHook: no final classification layer '
                f'({", ".join(CLS_LAYER_NAMES)}) found; grad-norm and '
                'score signals are off')
        if self.warmup_iters is None:
            self.warmup_iters = self._infer_warmup(runner)
        self._losses: Deque[float] = deque(maxlen=self.smooth)
        self._best = math.inf  # smoothed minimum since warm-up
        # (iteration, smoothed loss) when first judged; stagnation is judged
        # once, in a run that starts within the warm-up (a run resumed past
        # it does not know the loss at the warm-up's end)
        self._start: Optional[Tuple[int, float]] = None
        self._stagnation_open = runner.iter <= self.warmup_iters
        # per layer key: (iteration, sampled max foreground score)
        self._fg_max: Dict[str, Deque[Tuple[int, float]]] = {}
        self._ratios: Dict[str, Deque[Tuple[int, float]]] = {}
        self._reported = set()
        # this iteration's first detection, when action='stop'
        self._stop: Optional[dict] = None
        if self._loaded is not None:  # --resume: as the run left it
            self._set_state(self._loaded)
            self._loaded = None
        # once per runner; inserted after this hook, so the loop calling
        # before_train still visits every hook once
        if self.action == 'stop' and not any(
                isinstance(h, _StopAfterSchedulers) and h.health is self
                for h in runner.hooks):
            runner.register_hook(_StopAfterSchedulers(self))

    # ------------------------------------------------------------- resume
    def _get_state(self) -> dict:
        """The judging state, as lists of numbers (loadable weights-only)."""
        return dict(
            losses=list(self._losses), best=self._best,
            start=None if self._start is None else list(self._start),
            stagnation_open=self._stagnation_open,
            fg_max={k: [list(x) for x in v]
                    for k, v in self._fg_max.items()},
            ratios={k: [list(x) for x in v] for k, v in self._ratios.items()})

    def _set_state(self, state: dict) -> None:
        self._losses = deque(state['losses'], maxlen=self.smooth)
        self._best = state['best']
        self._start = None if state['start'] is None else tuple(
            state['start'])
        self._stagnation_open = state['stagnation_open']
        self._fg_max = {k: deque(tuple(x) for x in v)
                        for k, v in state['fg_max'].items()}
        self._ratios = {k: deque(tuple(x) for x in v)
                        for k, v in state['ratios'].items()}

    def _gather_for_checkpoint(self, runner, stage: str) -> None:
        """Under DDP, when a ``CheckpointHook`` may save at this point (it
        runs after this hook, with mmengine 0.10's rules), gather every
        rank's state: only rank 0 writes the checkpoint. ``stage``: 'iter',
        'epoch' (its interval or last save) or 'val' (``save_best``, which
        also re-saves the latest checkpoint when the metric improves)."""
        if get_world_size() == 1 or not hasattr(self, '_losses'):
            return
        for h in runner.hooks:
            if not isinstance(h, CheckpointHook):
                continue
            if stage == 'val':
                due = bool(h.save_best)
            elif h.by_epoch != (stage == 'epoch'):
                due = False
            elif stage == 'epoch':
                due = h.every_n_epochs(runner, h.interval, h.save_begin) or (
                    h.save_last and h.is_last_train_epoch(runner))
            else:
                due = h.every_n_train_iters(
                    runner, h.interval, h.save_begin) or (
                        h.save_last and h.is_last_train_iter(runner))
            if due:
                self._rank_states = (runner.iter,
                                     all_gather_object(self._get_state()))
                return

    def after_train_epoch(self, runner) -> None:
        self._gather_for_checkpoint(runner, 'epoch')

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._gather_for_checkpoint(runner, 'val')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if hasattr(self, '_losses') and not self._saving_stop:
            checkpoint['training_health'] = self._get_state()
            # gathered for this very save (not for an earlier one)
            if self._rank_states and self._rank_states[0] == runner.iter:
                checkpoint['training_health_per_rank'] = \
                    self._rank_states[1]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep this rank's state for ``before_train`` (mmengine loads
        first); only ``--resume`` continues a run, ``load_from`` starts
        one."""
        self._loaded = None
        if not runner._resume:
            return
        per_rank = checkpoint.get('training_health_per_rank')
        world_size = get_world_size()
        if per_rank is not None and len(per_rank) == world_size:
            self._loaded = per_rank[get_rank()]
            return
        self._loaded = checkpoint.get('training_health')
        if per_rank is not None:
            warnings.warn(
                f'TrainingHealthHook: the checkpoint holds the judging '
                f'states of {len(per_rank)} ranks and this run has '
                f'{world_size}: every rank resumes with rank 0\'s')
        elif world_size > 1 and self._loaded is not None:
            warnings.warn(
                'TrainingHealthHook: the checkpoint holds one judging state '
                '(saved by one process, or by a save this hook did not '
                f'see): all {world_size} ranks resume with it')

    def install(self, runner) -> None:
        """Put the grad and forward hooks on the model's final
        classification layers (``after_train`` removes them); the
        detection state is left as it is."""
        model = unwrap_detector(runner.model)
        self._layers = self._find_cls_layers(model)
        self._sq_norms: Dict[str, List[torch.Tensor]] = {}
        self._handles = []
        self._keys = self._layer_keys(list(self._layers))
        for name, (layer, _) in self._layers.items():
            for p in layer.parameters():
                if p.requires_grad:
                    # this backward's gradient, not the sum that gradient
                    # accumulation builds up in ``.grad``
                    self._handles.append(p.register_hook(
                        self._grad_hook(self._keys[name])))
        self._sample = False
        self._scores: Dict[str, List[torch.Tensor]] = {}
        for name, (layer, spec) in self._layers.items():
            for conv in (layer if isinstance(layer, nn.ModuleList)
                         else [layer]):
                self._handles.append(conv.register_forward_hook(
                    self._score_hook(self._keys[name], *spec)))

    def after_train(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @staticmethod
    def _find_cls_layers(model: nn.Module) -> Dict[str, tuple]:
        """``{path: (layer, (kind, num_classes, num_anchors))}``."""
        layers = {}
        for path, module in model.named_modules():
            leaf = path.rpartition('.')[2]
            if leaf not in CLS_LAYER_NAMES:
                continue
            head = model.get_submodule(path.rpartition('.')[0])
            num_classes = getattr(head, 'num_classes', 1)
            num_anchors = getattr(head, 'num_base_priors', 1)
            if leaf == 'convs_pred':
                kind = 'yolo'
            elif getattr(head, 'use_sigmoid_cls', None) is not None:
                kind = 'sigmoid' if head.use_sigmoid_cls else 'softmax'
            else:
                loss_cls = getattr(head, 'loss_cls', None)
                kind = 'sigmoid' if getattr(loss_cls, 'use_sigmoid',
                                            False) else 'softmax'
            layers[path] = (module, (kind, num_classes, num_anchors))
        return layers

    @staticmethod
    def _layer_keys(paths: List[str]) -> Dict[str, str]:
        """Log key per layer path: the layer's name, plus the stage numbers
        in its path where names repeat (Cascade R-CNN's ``fc_cls_s0``...)."""
        leaves = [p.rpartition('.')[2] for p in paths]
        keys = {}
        for path, leaf in zip(paths, leaves):
            stages = [part for part in path.split('.') if part.isdigit()]
            if leaves.count(leaf) > 1:
                leaf += ''.join(f'_s{i}' for i in stages) if stages else \
                    '_' + path.replace('.', '_')
            keys[path] = leaf
        return keys

    @staticmethod
    def _is_warmup(scheduler) -> bool:
        """A schedule from iteration 0 to a finite end that raises the LR (a
        LinearLR decay from 0, e.g. to the end of training, is none)."""
        name = type(scheduler).__name__
        if (name not in WARMUP_SCHEDULERS or scheduler.begin != 0
                or scheduler.end >= INF):
            return False
        if name == 'LinearLR':
            return scheduler.start_factor < scheduler.end_factor
        if name == 'ConstantLR':
            return scheduler.factor < 1
        return True  # QuadraticWarmupLR

    @classmethod
    def _infer_warmup(cls, runner) -> int:
        """The end, in iterations, of the LR warm-up that starts at 0."""
        schedulers = runner.param_schedulers or []
        if isinstance(schedulers, dict):
            schedulers = [s for group in schedulers.values() for s in group]
        ends = [s.end * (len(runner.train_dataloader) if s.by_epoch else 1)
                for s in schedulers if cls._is_warmup(s)]
        if not ends:
            runner.logger.warning(
                'TrainingHealthHook: no LR warm-up starting at iteration 0 '
                f'({", ".join(WARMUP_SCHEDULERS)}) found, so every pattern '
                'is judged from the first iteration; set warmup_iters to '
                'change that')
        return int(max(ends, default=0))

    def _grad_hook(self, key: str):
        def hook(grad: torch.Tensor) -> None:
            self._sq_norms.setdefault(key, []).append(
                grad.detach().float().pow(2).sum())
        return hook

    def _score_hook(self, key: str, kind: str, num_classes: int,
                    num_anchors: int):
        def hook(module, inputs, output) -> None:
            if self._sample and module.training:
                with torch.no_grad():
                    self._scores.setdefault(key, []).append(_fg_scores(
                        kind, output.detach().float(), num_classes,
                        num_anchors))
        return hook

    # ------------------------------------------------------- per iteration
    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        self._sample = runner.iter % self.score_interval == 0
        self._scores = {}
        self._sq_norms = {}
        # the gradients are those of the loss as the optim wrapper scales
        # it: AmpOptimWrapper multiplies by this iteration's loss scale (the
        # step after the backward may change it), and OptimWrapper divides
        # by the gradient accumulation count (the remainder near the end),
        # which its own scale_loss computes
        wrapper = getattr(runner, 'optim_wrapper', None)
        scaler = getattr(wrapper, 'loss_scaler', None)
        self._grad_scale = float(
            scaler.get_scale()) if scaler is not None else 1.0
        # (an OptimWrapperDict, one wrapper per model part, has no scale of
        # its own: its norms are left as the backward gave them)
        if isinstance(wrapper, OptimWrapper) and not isinstance(
                wrapper, OptimWrapperDict):
            self._grad_scale *= float(wrapper.scale_loss(torch.ones(())))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        it = runner.iter + 1  # 1-based, as the logger prints it
        hub = runner.message_hub
        log_vars = {k: float(v.detach()) if torch.is_tensor(v) else float(v)
                    for k, v in (outputs or {}).items()}
        for key, sq in self._sq_norms.items():
            hub.update_scalar(
                f'train/health/grad_norm_{key}',
                float(torch.stack(sq).sum().sqrt()) / self._grad_scale)
        for key, scores in self._scores.items():
            fg = torch.cat([s.flatten() for s in scores])
            if not fg.numel():
                continue
            # one layer: the plain keys; several: suffixed per layer
            suffix = f'_{key}' if len(self._layers) > 1 else ''
            fg_max = float(fg.max())
            hub.update_scalar(f'train/health/fg_mean{suffix}',
                              float(fg.mean()))
            hub.update_scalar(f'train/health/fg_max{suffix}', fg_max)
            hub.update_scalar(f'train/health/fg_frac{suffix}',
                              float((fg > 0.5).float().mean()))
            self._fg_max.setdefault(key, deque()).append((it, fg_max))
        if self._named_heads:
            self._check_named_heads(log_vars)
        ratios = head_loss_ratios(log_vars)
        for head, ratio in ratios.items():
            hub.update_scalar(f'train/health/ratio_{head}', ratio)
            if math.isfinite(ratio):  # (a non-finite loss is its own case)
                self._ratios.setdefault(head, deque()).append((it, ratio))
        self._check(runner, it, log_vars)
        self._gather_for_checkpoint(runner, 'iter')

    def _check_named_heads(self, log_vars: Dict[str, float]) -> None:
        """Fail on a ``head_ratio_ranges`` entry for a head the model does
        not log, whose bounds would otherwise be silently unused."""
        heads = {head_and_term(k)[0] for k in log_vars} - {None}
        unknown = sorted(self._named_heads - heads)
        if unknown:
            raise ValueError(
                f'TrainingHealthHook: head_ratio_ranges names '
                f'{unknown}, but this model logs the heads {sorted(heads)} '
                "(a two-stage detector's RoI head is 'det', a cascade's "
                "stages 's0', 's1', ...)")
        self._named_heads = set()  # checked once

    # ------------------------------------------------------------ patterns
    def _check(self, runner, it: int, log_vars: Dict[str, float]) -> None:
        bad = {k: v for k, v in log_vars.items()
               if 'loss' in k and not math.isfinite(v)}
        if bad:
            self._detect(runner, it, 'non_finite',
                         'non-finite ' + ', '.join(
                             f'{k}={v}' for k, v in bad.items()))
            return
        if 'loss' in log_vars:
            self._losses.append(log_vars['loss'])
        judged = it > self.warmup_iters
        if judged and len(self._losses) == self.smooth:
            self._check_loss_curve(runner, it,
                                   sum(self._losses) / self.smooth)
        start = it - self.window  # samples after ``start`` form the window
        for buf in [*self._fg_max.values(), *self._ratios.values()]:
            while buf and buf[0][0] <= start:
                buf.popleft()
        if not judged or start < self.warmup_iters:
            return
        for key, buf in self._fg_max.items():
            fg = [v for _, v in buf]
            # Near zero and not rising: a run started at a tiny prior (e.g.
            # OptimalBiasInit's 1e-5) that is learning shows a rising
            # maximum. A full window of samples is needed.
            half = len(fg) // 2
            if (len(fg) >= max(2, self.window // self.score_interval)
                    and max(fg) < self.collapse_score
                    and max(fg[half:]) <= max(fg[:half])):
                layer = f' of {key}' if len(self._layers) > 1 else ''
                self._detect(
                    runner, it, 'collapse',
                    f'max foreground score{layer} below '
                    f'{self.collapse_score:g} in all {len(fg)} samples of '
                    f'the last {self.window} iterations and not rising '
                    f'(first half up to {max(fg[:half]):.3g}, second half '
                    f'up to {max(fg[half:]):.3g})')
        for head, buf in self._ratios.items():
            low, high = self.head_ratio_ranges.get(head, self.ratio_range)
            values = [v for _, v in buf]
            if len(values) < self.window:
                continue
            median = statistics.median(values)
            for pattern, hit, bound in (
                    ('regression_domination', median < low, f'< {low:g}'),
                    ('classification_domination', median > high,
                     f'> {high:g}')):
                if hit:
                    self._detect(
                        runner, it, pattern,
                        f'head {head!r}: median cls/reg loss ratio '
                        f'{median:.3g} {bound} over the last {self.window} '
                        f'iterations (range {min(values):.3g}..'
                        f'{max(values):.3g}, latest {values[-1]:.3g})')

    def _check_loss_curve(self, runner, it: int, loss: float) -> None:
        self._best = min(self._best, loss)
        if loss > self.divergence_factor * self._best:
            self._detect(
                runner, it, 'divergence',
                f'smoothed loss {loss:.4g} > {self.divergence_factor:g} x '
                f'its minimum {self._best:.4g} since warm-up')
        if not self._stagnation_open:
            return
        if self._start is None:
            self._start = (it, loss)
            return
        start_it, start = self._start
        if it - start_it < self.stagnation_window:
            return
        self._stagnation_open = False
        if self._best > start * (1 - self.stagnation_rel):
            self._detect(
                runner, it, 'stagnation',
                f'smoothed loss minimum {self._best:.4g} in the '
                f'{it - start_it} iterations since iter {start_it} (the '
                f'first judged after the warm-up) is not '
                f'{self.stagnation_rel:.0%} below its level there, '
                f'{start:.4g}')

    def _detect(self, runner, it: int, pattern: str, evidence: str) -> None:
        if pattern not in self.patterns or pattern in self._reported:
            return
        self._reported.add(pattern)
        remedies = '; '.join(REMEDIES[pattern])
        message = (f'TrainingHealthHook: iter {it}: {_TITLES[pattern]}: '
                   f'{evidence}. Remedies: {remedies}')
        self.detections.append(dict(iter=it, pattern=pattern,
                                    evidence=evidence, message=message))
        # mmengine's logger drops records below ERROR on ranks > 0 (and
        # writes no file there): a pattern only that rank sees would vanish
        runner.logger.log(
            logging.WARNING if get_rank() == 0 else logging.ERROR, message)
        if self.action == 'stop' and self._stop is None:
            self._stop = self.detections[-1]

    def _stop_together(self, runner, it: int) -> None:
        """With ``action='stop'``: stop if this rank or any other detected a
        pattern this iteration. The ranks judge their own losses, so under
        DDP they agree first (one all-reduce), then all save and raise
        together; a rank that stopped alone would leave the others waiting
        in their next gradient all-reduce."""
        stop, self._stop = self._stop, None
        message = stop['message'] if stop else None
        if get_world_size() > 1:
            found = torch.tensor([
                float(stop is not None and stop['pattern'] == p)
                for p in PATTERNS
            ])
            all_reduce(found, op='max')
            if found.any() and message is None:
                titles = [_TITLES[p] for p, f in zip(PATTERNS, found) if f]
                message = (f'TrainingHealthHook: iter {it}: another rank '
                           f'detected {", ".join(titles)} (its evidence is '
                           "in that rank's error output)")
        if message is None:
            return
        filename = f'health_stop_iter_{it}.pth'
        # rank 0 writes; by iteration, as CheckpointHook's iteration saves
        # (by epoch would skip the rest of the epoch on --resume); without
        # the judging state, so that a resumed run is judged afresh
        self._saving_stop = True
        try:
            runner.save_checkpoint(runner.work_dir, filename, by_epoch=False)
        finally:
            self._saving_stop = False
        if get_rank() == 0:
            # where a bare --resume looks, as CheckpointHook records its own
            with open(osp.join(runner.work_dir, 'last_checkpoint'), 'w') as f:
                f.write(osp.join(runner.work_dir, filename))
        # the other ranks wait: under torchrun, a rank exiting with the
        # error makes the launcher kill rank 0 in the middle of the write
        barrier()
        runner.logger.warning(
            f'TrainingHealthHook: saved {filename} in {runner.work_dir}; '
            'stopping (action=stop)')
        # the error skips after_train: take the model's hooks off here, or
        # a later backward in this process would still feed them
        self.after_train(runner)
        raise TrainingFailureError(message)


class _StopAfterSchedulers(Hook):
    """The stop of ``TrainingHealthHook(action='stop')``, registered by it.

    It runs after ``ParamSchedulerHook`` (LOW) and ``LoggerHook``, and
    before ``CheckpointHook`` (VERY_LOW), as a hook of its own: the stop
    checkpoint then holds the schedulers stepped past the iteration, as
    ``CheckpointHook``'s do (saved before the step, a resumed run's
    per-iteration schedule lagged one step), and the iteration is logged.
    """

    priority = 80  # between LOW (70) and VERY_LOW (90)

    def __init__(self, health: TrainingHealthHook) -> None:
        self.health = health

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        self.health._stop_together(runner, runner.iter + 1)
