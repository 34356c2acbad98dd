"""RPN head with per-object loss weights (Bag of Freebies mixup).

Zhang et al., "Bag of Freebies for Training Object Detection Neural
Networks", 2019, Sec. 3.1. See :mod:`mmdet_freebies.models.utils.gt_weights`.
"""
from mmdet.models.dense_heads import RPNHead
from mmdet.registry import MODELS

from ..utils import GTWeightedAnchorHeadMixin


@MODELS.register_module()
class WeightedRPNHead(GTWeightedAnchorHeadMixin, RPNHead):
    """:class:`~mmdet.models.dense_heads.RPNHead` whose sampled positive
    anchors' objectness and box terms are multiplied by their gt's
    ``gt_instances.weights``.

    Sampled negatives keep weight 1 and ``avg_factor`` is unchanged
    (positives plus negatives with mmdet's ``RandomSampler``, positives
    with ``PseudoSampler``). Without the ``weights`` field the losses
    equal RPNHead's bit for bit. Same constructor arguments, parameters and
    state dict keys as RPNHead. The two-stage detector deep-copies the data
    samples for the RPN, so the weights reach this head unchanged.
    """
