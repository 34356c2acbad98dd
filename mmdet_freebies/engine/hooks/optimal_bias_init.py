"""Optimal bias initialisation of Sampling-Free (Chen et al., "Is Heuristic
Sampling Necessary in Training Deep Object Detectors?", TIP 2021, Sec.
III-B, eq. (9)): set the sigmoid classifier's bias to ``b = -log((1 - pi) /
pi)`` with ``pi`` the foreground prior of the training targets, so that at
initialisation the classifier predicts the prior and the CE loss of the
easy negatives starts near its minimum instead of swamping the gradient."""
import json
import os.path as osp
import re
import warnings
from typing import Dict, List, Optional

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from torch import nn

from mmdet.datasets.samplers import AspectRatioBatchSampler
from mmdet.models.dense_heads import (ATSSHead, FCOSHead, RetinaHead, RPNHead,
                                      YOLOV3Head)
from mmdet.registry import HOOKS
from ...models.task_modules.prior_estimator import (PriorEstimate,
                                                    dataset_num_classes,
                                                    estimate_prior,
                                                    find_dense_head,
                                                    prior_to_bias)
from ...utils.checks import is_int, is_real
from .utils import unwrap_detector

# Final classification conv of each supported head (PAAHead is an ATSSHead).
# Most specific first: a subclass is matched by its nearest supported base.
_CLS_LAYERS = ((YOLOV3Head, 'convs_pred'), (RPNHead, 'rpn_cls'),
               (ATSSHead, 'atss_cls'), (FCOSHead, 'conv_cls'), (RetinaHead,
                                                                'retina_cls'))


def cls_layer_name(head: nn.Module) -> str:
    """Name of ``head``'s final classification layer; ``ValueError`` naming
    the head type if the hook does not know it."""
    for head_type, name in _CLS_LAYERS:
        if isinstance(head, head_type) and isinstance(
                getattr(head, name, None), (nn.Conv2d, nn.ModuleList)):
            return name
    raise ValueError(
        f'OptimalBiasInit does not know head type {type(head).__name__!r}; '
        'supported: ' + ', '.join(f'{t.__name__}.{n}' for t, n in _CLS_LAYERS))


def _set_sigmoid_bias(head: nn.Module, priors: List[float]) -> List[float]:
    """Set the bias of each (anchor, class) channel from per-class priors;
    return the per-class biases."""
    biases = [prior_to_bias(p) for p in priors]
    conv = getattr(head, cls_layer_name(head))
    per_anchor = torch.tensor(biases, dtype=conv.bias.dtype)
    conv.bias.data.copy_(per_anchor.repeat(conv.bias.numel() // len(biases)))
    return biases


def _set_yolov3_bias(head: YOLOV3Head, obj_prior: float,
                     cls_priors: List[float]) -> Dict[str, object]:
    """With one class, the class channel's target over positives is 1,
    whose logit is infinite: that channel keeps its initialisation."""
    obj_bias = prior_to_bias(obj_prior)
    single = head.num_classes == 1
    cls_biases = [None] if single else [prior_to_bias(p) for p in cls_priors]
    for conv, num_anchors in zip(head.convs_pred,
                                 head.prior_generator.num_base_priors):
        # channels are [x, y, w, h, obj, cls_0..cls_C-1] per anchor
        bias = conv.bias.data.view(num_anchors, head.num_attrib)
        bias[:, 4] = obj_bias
        if not single:
            bias[:, 5:] = torch.tensor(cls_biases, dtype=bias.dtype)
    return dict(objectness_bias=obj_bias, bias=cls_biases)


def _roi_fc_cls(model: nn.Module,
                num_classes: Optional[int] = None,
                source: Optional[str] = None) -> nn.Linear:
    """The softmax classifier ``fc_cls`` of ``model.roi_head.bbox_head``;
    ``ValueError`` naming the head type if it has none, or one without a
    bias or without ``num_classes`` + 1 outputs (classes + background).

    Args:
        model (nn.Module): A detector with a ``roi_head``.
        num_classes (int, optional): Classes that ``fc_cls`` must score;
            None takes the head's ``num_classes``. Defaults to None.
        source (str, optional): Where ``num_classes`` comes from, for the
            message. Defaults to None.
    """
    if getattr(model, 'roi_head', None) is None:
        raise ValueError('OptimalBiasInit: roi_log_prior=True but '
                         f'{type(model).__name__} has no roi_head')
    head = model.roi_head.bbox_head
    name = type(head).__name__
    fc_cls = getattr(head, 'fc_cls', None)
    missing = None
    if fc_cls is None:
        missing = f'{name} has no fc_cls'
        if isinstance(head, nn.ModuleList):
            missing += (' (a multi-stage roi_head, e.g. Cascade R-CNN, has '
                        'one bbox_head per stage)')
    elif not isinstance(fc_cls, nn.Linear):
        missing = f'{name}.fc_cls is a {type(fc_cls).__name__}'
    elif fc_cls.bias is None:
        missing = f'{name}.fc_cls has no bias'
    if missing:
        raise ValueError('OptimalBiasInit: roi_log_prior=True needs '
                         'roi_head.bbox_head.fc_cls, a linear softmax '
                         f'classifier with a bias; {missing}')
    if num_classes is None:
        num_classes, source = head.num_classes, f'{name}.num_classes'
    if fc_cls.out_features != num_classes + 1:
        raise ValueError(
            f'OptimalBiasInit: roi_log_prior expects a softmax fc_cls with '
            f'{num_classes + 1} outputs (classes + background), got '
            f'{fc_cls.out_features} in {name}.fc_cls ({num_classes} '
            f'classes from {source})')
    return fc_cls


def _batch_size(loader) -> int:
    # mmdet's loaders batch with a batch_sampler (loader.batch_size is None)
    if loader.batch_size is not None:
        return loader.batch_size
    return getattr(loader.batch_sampler, 'batch_size', 1)


@HOOKS.register_module()
class OptimalBiasInit(Hook):
    """Initialise the classification bias of a dense head (or an RPN) to
    ``-log((1 - pi) / pi)``, with ``pi`` counted from the training data.

    The prior ``pi = N_fg / (N_valid * C)`` is counted by
    :func:`~mmdet_freebies.models.task_modules.prior_estimator.estimate_prior`
    with the head's own prior generator and assigner over ``num_images``
    training images (no network forward). Under DDP each rank counts its
    share and the counts are all-reduced, so all ranks set the same bias.

    Supported: RetinaHead ``retina_cls``, FCOSHead ``conv_cls``, ATSSHead
    and PAAHead ``atss_cls``, RPNHead ``rpn_cls`` (two-stage detectors),
    YOLOV3Head ``convs_pred`` (objectness and class channels each with
    their own prior), and the pack's weighted versions of these heads.
    Their other subclasses (FSAF, FreeAnchor, AutoAssign...) may assign
    targets their own way, so the prior is counted only for these exact
    types; ``prior=`` sets a constant prior on any of them. The softmax RoI
    classifier is left alone unless ``roi_log_prior`` is set (the official
    code never changes it).

    The hook runs in ``before_train``, after mmengine has initialised the
    weights and loaded or resumed a checkpoint, and only when no checkpoint
    was loaded (no ``load_from``, no ``resume`` that found a checkpoint),
    unless ``force``. A ``load_from`` checkpoint whose classification layer
    is missing or of another shape (a fine-tune to other classes) left
    that layer at its default init, so the hook runs then too. The result
    goes to the log and to ``work_dir/optimal_bias_init.json``.

    Args:
        num_images (int, optional): Training images to count; None counts
            the whole training set (the official G2 code). Defaults to 1000.
        per_class (bool): Use per-class priors ``pi_c`` (class frequencies)
            instead of one prior for all classes. Classes never seen get the
            global prior, with a warning. Defaults to False.
        force (bool): Also run when a checkpoint was loaded or resumed.
            Defaults to False.
        prior (float, optional): A constant prior instead of counting (the
            official G3 code: RetinaNet 1e-5; FCOS, Faster R-CNN 1e-4; ATSS,
            PAA 3e-3). For YOLOv3 it sets the objectness channels; the class
            channels, trained on positives only, get 1 / C.
            Defaults to None.
        roi_log_prior (bool): Also set the softmax RoI classifier's bias to
            ``log p`` (background ``1 - f``, class ``c`` ``f * n_c / n``
            from the gt class frequencies) with ``f = roi_fg_fraction``.
            Needs one ``roi_head.bbox_head`` with a linear ``fc_cls`` of
            ``C + 1`` outputs (not Cascade R-CNN's list of heads).
            Defaults to False.
        roi_fg_fraction (float, optional): Foreground fraction of RoIs for
            ``roi_log_prior``; None takes the RoI sampler's
            ``pos_fraction`` from ``train_cfg.rcnn``, which must then lie
            in (0, 1). Defaults to None.
        seed (int): Seed of the image sample. Defaults to 0.
        num_workers (int, optional): DataLoader workers for counting; None
            takes the training dataloader's. Defaults to None.
    """

    # before any hook that reads the weights in before_train
    priority = 'VERY_HIGH'

    def __init__(self,
                 num_images: Optional[int] = 1000,
                 per_class: bool = False,
                 force: bool = False,
                 prior: Optional[float] = None,
                 roi_log_prior: bool = False,
                 roi_fg_fraction: Optional[float] = None,
                 seed: int = 0,
                 num_workers: Optional[int] = None) -> None:
        if num_images is not None and (not is_int(num_images)
                                       or num_images < 1):
            raise ValueError('OptimalBiasInit: num_images must be a positive '
                             f'int or None, got {num_images!r}')
        for key, value in (('prior', prior), ('roi_fg_fraction',
                                              roi_fg_fraction)):
            if value is not None and not (is_real(value)
                                          and 0.0 < value < 1.0):
                raise ValueError(f'OptimalBiasInit: {key} must lie in (0, 1),'
                                 f' got {value!r}')
        for key, value in (('per_class', per_class), ('force', force),
                           ('roi_log_prior', roi_log_prior)):
            if not isinstance(value, bool):
                raise ValueError(f'OptimalBiasInit: {key} must be True or '
                                 f'False, got {key}={value!r}')
        if not is_int(seed):
            raise ValueError(f'OptimalBiasInit: seed must be an int, got '
                             f'seed={seed!r}')
        if num_workers is not None and (not is_int(num_workers)
                                        or num_workers < 0):
            raise ValueError('OptimalBiasInit: num_workers must be None or an '
                             f'int >= 0, got num_workers={num_workers!r}')
        if prior is not None and per_class:
            raise ValueError('OptimalBiasInit: per_class=True needs counted '
                             'priors; it cannot be used with prior='
                             f'{prior!r}')
        if roi_fg_fraction is not None and not roi_log_prior:
            raise ValueError('OptimalBiasInit: roi_fg_fraction='
                             f'{roi_fg_fraction!r} needs roi_log_prior=True')
        self.num_images = num_images
        self.per_class = per_class
        self.force = force
        self.prior = prior
        self.roi_log_prior = roi_log_prior
        self.roi_fg_fraction = roi_fg_fraction
        self.seed = seed
        self.num_workers = num_workers
        # classification-layer parameters the loaded checkpoint lacks (or
        # holds in another shape), from after_load_checkpoint
        self._not_in_checkpoint: List[str] = []

    @property
    def _counts(self) -> bool:
        """Whether the prior is counted from the data (not a constant)."""
        return self.prior is None or self.roi_log_prior

    def before_run(self, runner) -> None:
        """Fail before any training work if the model is not supported."""
        model = unwrap_detector(runner.model)
        _, head = find_dense_head(model, self._counts)
        cls_layer_name(head)
        if self.roi_log_prior:
            # the head first: a multi-stage one also has a list of rcnn cfgs
            _roi_fc_cls(model)
            self._roi_fg_fraction(model)

    def _roi_fg_fraction(self, model: nn.Module) -> float:
        if self.roi_fg_fraction is not None:
            return self.roi_fg_fraction
        sampler = (model.train_cfg or {}).get('rcnn', {}).get('sampler', {})
        if 'pos_fraction' not in sampler:
            raise ValueError(
                'OptimalBiasInit: roi_log_prior=True needs roi_fg_fraction, '
                'or a train_cfg.rcnn.sampler with pos_fraction (got sampler '
                f'{sampler!r})')
        fraction = sampler['pos_fraction']
        # 1 would give the background, 0 every class, a bias of -inf
        if not (is_real(fraction) and 0.0 < fraction < 1.0):
            raise ValueError(
                'OptimalBiasInit: roi_log_prior=True takes the RoI '
                'foreground fraction from train_cfg.rcnn.sampler, whose '
                f'pos_fraction must lie in (0, 1), got pos_fraction='
                f'{fraction!r}; or set roi_fg_fraction')
        return float(fraction)

    def _skip_reason(self, runner) -> Optional[str]:
        if self.force:
            return None
        loaded = getattr(runner, '_has_loaded', None)
        if loaded is None:  # runners without the flag: trust the config
            loaded = bool(runner._resume or runner._load_from)
        if not loaded:
            return None
        if not runner._resume and self._not_in_checkpoint:
            runner.logger.info(
                f'OptimalBiasInit: load_from={runner._load_from!r} has no '
                f'{self._not_in_checkpoint} of the model\'s shape: the layer '
                'kept its default init, so its bias is set')
            return None
        return ('a checkpoint was loaded or resumed '
                f'(resume={runner._resume}, '
                f'load_from={runner._load_from!r})')

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Note the classification layer's parameters that the checkpoint
        mmengine has just read lacks or holds in another shape (a fine-tune
        to other classes): mmengine leaves them at their default init with a
        log line only."""
        model = unwrap_detector(runner.model)
        head_name, head = find_dense_head(model, self._counts)
        layer = f'{head_name}.{cls_layer_name(head)}.'
        state = checkpoint.get('state_dict', checkpoint)
        # the runner's default revise_keys: a DDP-saved model's prefix
        shapes = {re.sub(r'^module\.', '', k): v.shape
                  for k, v in state.items()}
        self._not_in_checkpoint = [
            name for name, param in model.named_parameters()
            if name.startswith(layer) and shapes.get(name) != param.shape]

    def before_train(self, runner) -> None:
        """Count the prior and set the bias, unless a checkpoint was
        loaded."""
        reason = self._skip_reason(runner)
        if reason:
            runner.logger.info(f'OptimalBiasInit skipped: {reason}; set '
                               'force=True to re-initialise the bias')
            return
        model = unwrap_detector(runner.model)
        head_name, head = find_dense_head(model, self._counts)
        estimate = None
        if self._counts:
            loader = runner.train_dataloader
            if self.roi_log_prior:  # before the count, which takes minutes
                _roi_fc_cls(model, dataset_num_classes(loader.dataset),
                            "the training set's metainfo['classes']")
            num_workers = (loader.num_workers
                           if self.num_workers is None else self.num_workers)
            estimate = estimate_prior(model,
                                      loader.dataset,
                                      self.num_images,
                                      head=head,
                                      batch_size=_batch_size(loader),
                                      aspect_ratio_groups=isinstance(
                                          loader.batch_sampler,
                                          AspectRatioBatchSampler),
                                      num_workers=num_workers,
                                      collate_fn=loader.collate_fn,
                                      seed=self.seed)
        record = self._apply(model, head_name, head, estimate)
        runner.logger.info('OptimalBiasInit: ' + json.dumps(record))
        if is_main_process():
            with open(osp.join(runner.work_dir, 'optimal_bias_init.json'),
                      'w') as f:
                json.dump(record, f, indent=2)

    def _class_priors(self, estimate: PriorEstimate) -> List[float]:
        if estimate.num_fg == 0:  # the bias of prior 0 is -inf
            raise ValueError(
                f'OptimalBiasInit: no positive {estimate.head_type} priors '
                f'in the {estimate.num_images} counted images, so no prior '
                'to start from: check the annotations and the pipeline, or '
                'set prior=<float>')
        if not self.per_class:
            return [estimate.prior] * estimate.num_classes
        priors = list(estimate.per_class_prior)
        unseen = [c for c, p in enumerate(priors) if p <= 0.0]
        if unseen:
            warnings.warn(f'OptimalBiasInit: classes {unseen} have no '
                          f'positive in {estimate.num_images} images; they '
                          f'get the global prior {estimate.prior:.3g}')
            for c in unseen:
                priors[c] = estimate.prior
        # YOLOv3's class channels train on positives only: a class that has
        # every counted positive has prior 1, whose bias is +inf
        every = [c for c, p in enumerate(priors) if p >= 1.0]
        if every:
            raise ValueError(
                f'OptimalBiasInit: per_class=True: class {every[0]} has '
                f'every positive in the {estimate.num_images} counted images '
                '(prior 1, bias +inf); count more images '
                '(num_images) or set per_class=False')
        return priors

    def _apply(self, model: nn.Module, head_name: str, head: nn.Module,
               estimate: Optional[PriorEstimate]) -> dict:
        record: Dict[str, object] = dict(
            head=f'{head_name}:{type(head).__name__}',
            layer=cls_layer_name(head),
            source='counted' if self.prior is None else 'constant',
            per_class=self.per_class)
        if self.prior is not None:
            obj_prior = self.prior
            # YOLOv3's class channels train on positives only: their
            # optimal prior is the mean class target there, 1 / C
            cls_prior = 1 / head.num_classes if isinstance(
                head, YOLOV3Head) else self.prior
            priors = [cls_prior] * head.num_classes
        else:
            priors = self._class_priors(estimate)
            obj_prior = estimate.objectness_prior
        if self.roi_log_prior:
            # first: its checks of the counted classes fail before any bias
            # has changed
            record['roi_bias'] = self._set_roi_log_prior(model, estimate)
        if isinstance(head, YOLOV3Head):
            record.update(_set_yolov3_bias(head, obj_prior, priors),
                          objectness_prior=obj_prior)
            if head.num_classes == 1:
                priors = [None]  # the class channel was left as it was
        else:
            record['bias'] = _set_sigmoid_bias(head, priors)
        record['prior'] = priors if self.per_class else priors[0]
        if not self.per_class:
            record['bias'] = record['bias'][0]
        if estimate is not None:
            record['estimate'] = estimate.to_dict()
            record['seconds'] = estimate.seconds
        return record

    def _set_roi_log_prior(self, model: nn.Module,
                           estimate: PriorEstimate) -> List[float]:
        fg = self._roi_fg_fraction(model)
        gt = torch.tensor(estimate.num_gt_per_class, dtype=torch.float64)
        fc_cls = _roi_fc_cls(model, len(gt), 'the counted boxes')
        unseen = torch.nonzero(gt == 0).view(-1).tolist()
        if unseen:
            warnings.warn(f'OptimalBiasInit: classes {unseen} have no box in '
                          f'{estimate.num_images} images; roi_log_prior '
                          'counts half a box for each')
        # half a box for the classes never seen, so that log stays finite
        freq = gt.clamp(min=0.5) / gt.clamp(min=0.5).sum()
        bias = torch.cat([(fg * freq).log(),
                          torch.tensor([1.0 - fg], dtype=torch.float64).log()])
        fc_cls.bias.data.copy_(bias.to(fc_cls.bias.dtype))
        return bias.tolist()
