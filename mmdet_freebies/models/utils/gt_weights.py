"""Per-object loss weights carried by ``gt_instances.weights``.

Zhang et al., "Bag of Freebies for Training Object Detection Neural
Networks", 2019, Sec. 3.1: after visually coherent mixup each object keeps
its blending ratio as a loss weight (lambda for the first image's objects,
1 - lambda for the second's). The weight of an object multiplies the loss
terms of the positives assigned to it; negatives keep weight 1. GluonCV
does this in ``YOLOV3Loss`` (``weight_t * objness_t`` and
``class_mask * objness_t``).

The helpers here are shared by the weighted heads of this package. They do
nothing (and return mmdet's tensors untouched) when an image has no
``weights`` field.
"""
from typing import Optional

from mmengine.structures import InstanceData
from torch import Tensor

from mmdet.models.task_modules.prior_generators import anchor_inside_flags


def get_gt_weights(gt_instances: InstanceData) -> Optional[Tensor]:
    """Return ``gt_instances.weights`` after checking it, or None if absent.

    Args:
        gt_instances (:obj:`InstanceData`): Ground truth of one image.

    Returns:
        Tensor or None: Float weights of shape (num_gts, ).

    Raises:
        TypeError: If ``weights`` is not a 1-D floating-point tensor with one
            weight per gt box (``InstanceData`` already checks the length).
        ValueError: If a weight is negative or not finite: it would turn a
            loss term negative or make the whole loss NaN.
    """
    weights = gt_instances.get('weights')
    if weights is None:
        return None
    if not (isinstance(weights, Tensor) and weights.dim() == 1
            and weights.is_floating_point()):
        raise TypeError(
            'gt_instances.weights must be a 1-D float tensor with one weight '
            f'per gt box, got {type(weights).__name__} with shape '
            f'{tuple(getattr(weights, "shape", ()))} and dtype '
            f'{getattr(weights, "dtype", None)}')
    # one host read per image (a sync on a GPU), against a silently wrong
    # loss; NaN fails the comparison
    if not bool(((weights >= 0) & (weights < float('inf'))).all()):
        raise ValueError('gt_instances.weights must be finite and >= 0, got '
                         f'{weights.tolist()}')
    return weights


class GTWeightedAnchorHeadMixin:
    """Scale the targets' weights of positive anchors by their gt's weight.

    Mix in before an :class:`~mmdet.models.dense_heads.AnchorHead` subclass
    whose targets come from ``AnchorHead._get_targets_single`` (RetinaHead,
    RPNHead, and heads derived from them). The label weight of a positive
    anchor is per anchor, so with sigmoid focal or BCE losses it scales all
    C class terms of that anchor (as GluonCV's ``class_mask * objness_t``);
    with softmax CE it scales the anchor's one term. The normalisers
    (``avg_factor``) are not changed, as in GluonCV. Without
    ``gt_instances.weights`` mmdet's targets are returned untouched.
    """

    def _get_targets_single(self,
                            flat_anchors: Tensor,
                            valid_flags: Tensor,
                            gt_instances: InstanceData,
                            img_meta: dict,
                            gt_instances_ignore: Optional[InstanceData] = None,
                            unmap_outputs: bool = True) -> tuple:
        """Call mmdet's ``_get_targets_single`` and weight the positives.

        Args and returns are those of
        ``AnchorHead._get_targets_single``; ``label_weights`` and
        ``bbox_weights`` of the positive anchors are multiplied by
        ``gt_instances.weights[pos_assigned_gt_inds]``.
        """
        targets = super()._get_targets_single(flat_anchors, valid_flags,
                                              gt_instances, img_meta,
                                              gt_instances_ignore,
                                              unmap_outputs)
        weights = get_gt_weights(gt_instances)
        if weights is None:
            return targets
        (labels, label_weights, bbox_targets, bbox_weights, pos_inds,
         neg_inds, sampling_result) = targets
        # ``pos_inds`` index the anchors inside the image; the returned
        # targets cover all anchors when ``unmap_outputs``.
        inds = pos_inds
        if unmap_outputs:
            inside_flags = anchor_inside_flags(
                flat_anchors, valid_flags, img_meta['img_shape'][:2],
                self.train_cfg['allowed_border'])
            inds = inside_flags.nonzero().squeeze(1)[pos_inds]
        pos_weights = weights[sampling_result.pos_assigned_gt_inds]
        label_weights[inds] *= pos_weights
        bbox_weights[inds] *= pos_weights[:, None]
        return targets
