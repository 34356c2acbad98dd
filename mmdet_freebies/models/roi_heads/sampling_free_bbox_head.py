"""The RoI box head of sampling-free Faster R-CNN.

Chen et al., "Is Heuristic Sampling Necessary in Training Deep Object
Detectors?" (IEEE TIP 2021), Sec. III: the RoI head is trained on every
proposal that the matcher does not ignore, with no 512-RoI sampler. The
official code (``roi_heads/box_head/loss.py``) then normalises

* the classification CE by the number of kept RoIs (a mean), and
* the box loss by the number of positive coordinates,
  ``sum over positives / (num_pos * 4)``.

mmdet's ``BBoxHead.loss`` already averages the CE over the RoIs with a
non-zero label weight, but divides the box loss by the number of *all* RoIs
(``bbox_targets.size(0)``), which with ~1000 kept proposals per image would
shrink it, and through guided loss scaling the classification loss too, by
the background fraction. This head only rescales the box weights so that
mmdet's division gives the official per-positive-coordinate mean.
"""
from typing import Optional

from torch import Tensor

from mmdet.models.losses import (CIoULoss, DIoULoss, EIoULoss, GIoULoss,
                                 IoULoss, SIoULoss)
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.registry import MODELS

# mmdet's IoU losses (with reg_decoded_bbox) average the box weights over
# the coordinates: one term per box, not per coordinate
_PER_BOX_LOSSES = (IoULoss, GIoULoss, DIoULoss, CIoULoss, EIoULoss, SIoULoss)


@MODELS.register_module()
class SamplingFreeShared2FCBBoxHead(Shared2FCBBoxHead):
    """``Shared2FCBBoxHead`` whose box loss is a mean over positives.

    Same layers, parameter names and predictions as ``Shared2FCBBoxHead``;
    only the training loss normalisation differs: ``loss_bbox`` is the sum
    over positive RoIs and box coordinates divided by
    ``max(num_pos, 1) * box_dim`` instead of by the number of RoIs; for
    mmdet's IoU losses, one term per box, the sum over positive RoIs
    divided by ``max(num_pos, 1)``.
    """

    def loss(self,
             cls_score: Tensor,
             bbox_pred: Tensor,
             rois: Tensor,
             labels: Tensor,
             label_weights: Tensor,
             bbox_targets: Tensor,
             bbox_weights: Tensor,
             reduction_override: Optional[str] = None) -> dict:
        """Loss of ``BBoxHead.loss`` with the box loss averaged per positive
        coordinate (see the class docstring); arguments as there."""
        pos = (labels >= 0) & (labels < self.num_classes)
        # BBoxHead.loss divides by bbox_targets.size(0); scaling the weights
        # turns that into a division by num_pos * box_dim (or num_pos).
        terms = 1 if isinstance(self.loss_bbox, _PER_BOX_LOSSES) else \
            bbox_targets.size(-1)
        scale = bbox_targets.size(0) / (pos.sum().clamp(min=1) * terms)
        return super().loss(cls_score, bbox_pred, rois, labels, label_weights,
                            bbox_targets, bbox_weights * scale,
                            reduction_override)
