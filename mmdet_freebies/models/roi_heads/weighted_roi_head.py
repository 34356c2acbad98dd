"""RoI head and bbox head with per-object loss weights (Bag of Freebies).

Zhang et al., "Bag of Freebies for Training Object Detection Neural
Networks", 2019, Sec. 3.1: the weight of a mixed-up object multiplies the
classification and box terms of the positive RoIs assigned to it; negative
RoIs keep weight 1. The RoI head hands each sampling result the weights of
its positives' gts (``pos_gt_weights``); the bbox head applies them to its
targets' weights. Both need each other, so the RoI head checks its bbox
head at build time.
"""
import warnings
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from mmdet.models.roi_heads import StandardRoIHead
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import ConfigType, InstanceList

from ..utils import get_gt_weights


class GTWeightedBBoxHeadMixin:
    """Multiply the positive RoIs' label and bbox weights by
    ``SamplingResult.pos_gt_weights`` where a sampling result has it.

    Mix in before a :class:`~mmdet.models.roi_heads.bbox_heads.BBoxHead`
    subclass (mmdet puts each image's positives first in its targets). The
    box loss normaliser is unchanged; the classification one counts RoIs
    with a non-zero weight, so it changes only for an object of weight 0.
    Without ``pos_gt_weights`` the targets are mmdet's, bit for bit. A
    sampling result without the attribute at all did not pass through a
    weighted RoI head, which would drop any weights: that warns.
    """

    def get_targets(self,
                    sampling_results: List[SamplingResult],
                    rcnn_train_cfg: ConfigType,
                    concat: bool = True) -> tuple:
        """Targets as ``BBoxHead.get_targets``, positives weighted."""
        if not all(hasattr(res, 'pos_gt_weights') for res in sampling_results):
            warnings.warn(
                f'{type(self).__name__} got sampling results from a RoI head '
                'that does not pass per-object weights (use '
                'WeightedStandardRoIHead): gt_instances.weights, if any, '
                'are not applied')
        if all(
                getattr(res, 'pos_gt_weights', None) is None
                for res in sampling_results):
            return super().get_targets(sampling_results, rcnn_train_cfg,
                                       concat)
        labels, label_weights, bbox_targets, bbox_weights = \
            super().get_targets(sampling_results, rcnn_train_cfg,
                                concat=False)
        for res, lw, bw in zip(sampling_results, label_weights, bbox_weights):
            weights = getattr(res, 'pos_gt_weights', None)
            if weights is not None:
                num_pos = len(res.pos_inds)
                lw[:num_pos] *= weights
                bw[:num_pos] *= weights[:, None]
        if concat:
            labels = torch.cat(labels, 0)
            label_weights = torch.cat(label_weights, 0)
            bbox_targets = torch.cat(bbox_targets, 0)
            bbox_weights = torch.cat(bbox_weights, 0)
        return labels, label_weights, bbox_targets, bbox_weights


@MODELS.register_module()
class WeightedShared2FCBBoxHead(GTWeightedBBoxHeadMixin, Shared2FCBBoxHead):
    """:class:`~mmdet.models.roi_heads.bbox_heads.Shared2FCBBoxHead` with
    per-object weights on the positive RoIs; same parameters and state dict
    keys. Use it inside :class:`WeightedStandardRoIHead`."""


class GTWeightedRoIHeadMixin:
    """Give each sampling result the weights of its positives' gts.

    Mix in before a :class:`~mmdet.models.roi_heads.StandardRoIHead`
    subclass. mmdet's ``loss`` creates the sampling results and passes them
    to ``bbox_loss`` without the gts, so ``loss`` keeps the batch's
    ``gt_instances.weights`` for the duration of the call.
    """

    _batch_gt_weights: Optional[List[Optional[Tensor]]] = None

    def init_bbox_head(self, bbox_roi_extractor: ConfigType,
                       bbox_head: ConfigType) -> None:
        """Build as mmdet, then check that the bbox head applies weights."""
        super().init_bbox_head(bbox_roi_extractor, bbox_head)
        if not isinstance(self.bbox_head, GTWeightedBBoxHeadMixin):
            raise TypeError(
                f'{type(self).__name__} needs a bbox_head that applies the '
                'per-object weights (e.g. WeightedShared2FCBBoxHead), got '
                f"bbox_head.type='{type(self.bbox_head).__name__}'")

    def loss(self, x: Tuple[Tensor], rpn_results_list: InstanceList,
             batch_data_samples: SampleList) -> dict:
        """As ``StandardRoIHead.loss``, with the gt weights available to
        :meth:`bbox_loss`."""
        self._batch_gt_weights = [
            get_gt_weights(sample.gt_instances)
            for sample in batch_data_samples
        ]
        try:
            return super().loss(x, rpn_results_list, batch_data_samples)
        finally:
            self._batch_gt_weights = None

    def bbox_loss(self, x: Tuple[Tensor],
                  sampling_results: List[SamplingResult]) -> dict:
        """Attach ``pos_gt_weights`` (None for an image without weights) to
        the sampling results, then as mmdet."""
        batch_weights = self._batch_gt_weights or [None] * len(
            sampling_results)
        for res, weights in zip(sampling_results, batch_weights):
            res.pos_gt_weights = None if weights is None else weights[
                res.pos_assigned_gt_inds]
        return super().bbox_loss(x, sampling_results)


@MODELS.register_module()
class WeightedStandardRoIHead(GTWeightedRoIHeadMixin, StandardRoIHead):
    """:class:`~mmdet.models.roi_heads.StandardRoIHead` whose positive RoIs'
    classification and box terms are multiplied by their gt's
    ``gt_instances.weights``.

    Needs a weighted bbox head such as :class:`WeightedShared2FCBBoxHead`
    (checked at build time). Without the ``weights`` field the losses equal
    StandardRoIHead's bit for bit. Same parameters and state dict keys.
    """
