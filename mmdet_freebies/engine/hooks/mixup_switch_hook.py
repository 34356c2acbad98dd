"""Turn the visually coherent mixup off for the last epochs.

Bag of Freebies (Zhang et al. 2019) / GluonCV ``train_yolo3.py``: mixup is
disabled for the last ``--no-mixup-epochs`` = 20 epochs (of 280 on COCO, of
200 on VOC) so the model finishes on natural images.
"""
import warnings
from typing import Iterator, List, Sequence

from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop
from mmdet.datasets import MultiImageMixDataset
from mmdet.datasets.transforms import PackDetInputs
from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
from mmdet.models.roi_heads import BaseRoIHead
from mmdet.models.roi_heads.bbox_heads import BBoxHead
from mmdet.registry import HOOKS
from torch import nn

from ...models.dense_heads import WeightedYOLOV3Head
from ...models.roi_heads.weighted_roi_head import (GTWeightedBBoxHeadMixin,
                                                   GTWeightedRoIHeadMixin)
from ...models.utils import GTWeightedAnchorHeadMixin
from ...utils.checks import is_int
from .utils import unwrap_detector

DEFAULT_MIXUP_TYPES = ('VisuallyCoherentMixup', 'VisuallyCoherentMixupCached')


def heads_ignoring_weights(model: nn.Module) -> List[str]:
    """The heads of ``model`` that would train every object at weight 1:
    mmdet's dense, RoI and bbox heads do not read ``gt_instances.weights``,
    only the pack's weighted heads (docs/weighted_loss.md) do."""
    model = unwrap_detector(model)
    weighted = {BaseDenseHead: (GTWeightedAnchorHeadMixin, WeightedYOLOV3Head),
                BaseRoIHead: GTWeightedRoIHeadMixin,
                BBoxHead: GTWeightedBBoxHeadMixin}
    return [f'{name} ({type(m).__name__})' for name, m in model.named_modules()
            if any(isinstance(m, kind) and not isinstance(m, ok)
                   for kind, ok in weighted.items())]


def _child_datasets(dataset) -> list:
    """The datasets a wrapper holds (``dataset``, ``datasets``)."""
    return [d for d in [getattr(dataset, 'dataset', None)] +
            list(getattr(dataset, 'datasets', None) or []) if d is not None]


def pipeline_transforms(dataset) -> Iterator:
    """Every transform in the pipelines of ``dataset``, through dataset
    wrappers (``dataset``, ``datasets``) and wrapping transforms
    (``transforms``); ``MultiImageMixDataset`` keeps a list, not a
    ``Compose``."""
    pipeline = getattr(dataset, 'pipeline', None)
    stack = list(getattr(pipeline, 'transforms', pipeline) or [])
    while stack:
        transform = stack.pop()
        yield transform
        inner = getattr(transform, 'transforms', None)
        stack.extend(getattr(inner, 'transforms', inner) or [])
    for child in _child_datasets(dataset):
        yield from pipeline_transforms(child)


@HOOKS.register_module()
class MixupSwitchHook(Hook):
    """Disable mixup transforms from epoch ``max_epochs - num_last_epochs``.

    Both dataset arrangements are handled, also nested in dataset wrappers
    (``RepeatDataset``, ``ConcatDataset``, ...):

    * ``MultiImageMixDataset``: ``type_keys`` are added to its
      ``skip_type_keys`` (matched against the ``type`` strings of its
      pipeline config, as mmdet's ``YOLOXModeSwitchHook`` does);
    * any dataset whose pipeline contains a transform of one of the
      ``type_keys`` classes (e.g. ``VisuallyCoherentMixupCached``): the
      transform is removed from the pipeline.

    Without mixup no ``gt_weights`` are produced, so weighted heads compute
    mmdet's plain loss. With ``persistent_workers`` the dataloader's worker
    processes hold copies of the dataset, so the loader's iterator is
    dropped and the next epoch starts fresh workers (what mmdet's
    ``YOLOXModeSwitchHook`` achieves). Epochs count from 0 as in mmengine
    and GluonCV, so exactly ``num_last_epochs`` epochs run without mixup
    (``YOLOXModeSwitchHook`` switches one epoch earlier). Resuming inside
    the last epochs switches again at the first epoch. The switch is by
    epoch only: under ``IterBasedTrainLoop`` (one epoch, one data iterator
    and its workers for the whole run) it could not take effect, so
    ``before_train`` refuses that loop unless ``num_last_epochs=0``.

    Args:
        num_last_epochs (int): Number of final epochs without mixup.
            Defaults to 20.
        type_keys (Sequence[str]): Transform type names to switch off.
            Defaults to ``('VisuallyCoherentMixup',
            'VisuallyCoherentMixupCached')``.
    """

    def __init__(self,
                 num_last_epochs: int = 20,
                 type_keys: Sequence[str] = DEFAULT_MIXUP_TYPES) -> None:
        if not is_int(num_last_epochs) or num_last_epochs < 0:
            raise ValueError('MixupSwitchHook: num_last_epochs must be an int '
                             f'>= 0, got num_last_epochs={num_last_epochs!r}')
        if isinstance(type_keys, str) or not type_keys or not all(
                isinstance(k, str) for k in type_keys):
            raise ValueError('MixupSwitchHook: type_keys must be a non-empty '
                             f'sequence of str, got type_keys={type_keys!r}')
        self.num_last_epochs = num_last_epochs
        self.type_keys = tuple(type_keys)
        self._has_switched = False

    def before_train(self, runner) -> None:
        """Check that the training dataset has a transform to switch off
        (a misspelt ``type_keys`` would otherwise surface only at the switch
        epoch, after mixing to the end); warn when the switch leaves no
        epoch with mixup, when a packing transform would drop the mixup
        weights, or when a head of the model would ignore them."""
        loop = runner.train_loop
        if self.num_last_epochs and not isinstance(loop, EpochBasedTrainLoop):
            raise ValueError(
                'MixupSwitchHook switches mixup off by epoch, but the '
                f'training loop is {loop.__class__.__name__}, which runs as '
                'one epoch with one data iterator, so the switch could never '
                f'take effect (num_last_epochs={self.num_last_epochs}); '
                "train with train_cfg=dict(type='EpochBasedTrainLoop', ...) "
                'or set num_last_epochs=0 to mix to the end')
        if not self.switch_off(runner.train_dataloader.dataset,
                               dry_run=True):
            raise ValueError(
                f'MixupSwitchHook: no transform of type_keys='
                f'{self.type_keys} in the training dataset, so none could be '
                'switched off; name the mixup transforms of the pipeline, or '
                'remove the hook')
        if self.num_last_epochs >= runner.max_epochs:
            warnings.warn(f'MixupSwitchHook: num_last_epochs='
                          f'{self.num_last_epochs} >= max_epochs='
                          f'{runner.max_epochs}, mixup is never used')
        transforms = list(pipeline_transforms(runner.train_dataloader.dataset))
        weighted = any(
            type(t).__name__ in self.type_keys
            and getattr(t, 'with_weights', False) for t in transforms)
        if not weighted:  # e.g. the paper's even 0.5:0.5 mixup
            return
        droppers = sorted({
            type(t).__name__ for t in transforms
            if isinstance(t, PackDetInputs) and 'gt_weights' not in getattr(
                t, 'mapping_table', {})
        })
        if droppers:
            warnings.warn(
                'MixupSwitchHook: mixup adds gt_weights, but the training '
                f'pipeline packs with {droppers}, which drops keys it does '
                'not know, so every object trains at full weight. Pack with '
                'PackDetInputsWithWeights')
        plain = heads_ignoring_weights(runner.model)
        if plain:
            warnings.warn(
                'MixupSwitchHook: mixup weights each object by its blend '
                'ratio (gt_instances.weights), but these heads ignore the '
                f'weights and train mixed-in objects at full weight: {plain}. '
                'Use the weighted heads (WeightedRetinaHead, WeightedRPNHead, '
                'WeightedYOLOV3Head, WeightedStandardRoIHead with '
                'WeightedShared2FCBBoxHead), see docs/weighted_loss.md')

    def before_train_epoch(self, runner) -> None:
        """Switch mixup off once the last ``num_last_epochs`` start."""
        if self._has_switched or (runner.epoch <
                                  runner.max_epochs - self.num_last_epochs):
            return
        loader = runner.train_dataloader
        found = self.switch_off(loader.dataset)  # > 0: before_train checked
        runner.logger.info(f'MixupSwitchHook: mixup off from epoch '
                           f'{runner.epoch} ({found} transform(s))')
        if getattr(loader, 'persistent_workers', False):
            # Persistent workers keep their own copy of the dataset: drop
            # the iterator so that the next ``iter`` forks new workers.
            loader._iterator = None
        self._has_switched = True

    def switch_off(self, dataset, dry_run: bool = False) -> int:
        """Disable the mixup transforms in ``dataset``; return how many
        (with ``dry_run``, only count them)."""
        found = 0
        if isinstance(dataset, MultiImageMixDataset):
            for t in dataset.pipeline_types:
                if not isinstance(t, str) and getattr(
                        t, '__name__', None) in self.type_keys:
                    raise ValueError(
                        f'MixupSwitchHook: the MultiImageMixDataset pipeline '
                        f'gives {t.__name__} as a class; mmdet skips its '
                        'transforms by their type strings only, so write '
                        f"type='{t.__name__}'")
            # Types may be scoped ('mmdet.X'); skip the exact strings.
            hits = [
                t for t in dataset.pipeline_types
                if isinstance(t, str) and t.split('.')[-1] in self.type_keys
            ]
            if hits and not dry_run:
                old = list(dataset._skip_type_keys or [])
                dataset.update_skip_type_keys(
                    old + [t for t in hits if t not in old])
            found += len(hits)
        pipeline = getattr(dataset, 'pipeline', None)
        if pipeline is not None and hasattr(pipeline, 'transforms'):
            found += self._remove_from(pipeline, dry_run)
        for child in _child_datasets(dataset):
            found += self.switch_off(child, dry_run)
        return found

    def _remove_from(self, compose, dry_run: bool) -> int:
        kept = [
            t for t in compose.transforms
            if type(t).__name__ not in self.type_keys
        ]
        removed = len(compose.transforms) - len(kept)
        if not dry_run:
            compose.transforms[:] = kept
        for t in kept:
            inner = getattr(t, 'transforms', None)
            if isinstance(inner, list):  # a Compose, or RandomChoice's list
                removed += self._remove_from(t, dry_run)  # of Composes
            elif isinstance(getattr(inner, 'transforms', None), list):
                removed += self._remove_from(inner, dry_run)  # RandomApply
        return removed
