"""RetinaNet head with per-object loss weights (Bag of Freebies mixup).

Zhang et al., "Bag of Freebies for Training Object Detection Neural
Networks", 2019, Sec. 3.1. See :mod:`mmdet_freebies.models.utils.gt_weights`.
"""
from mmdet.models.dense_heads import RetinaHead
from mmdet.registry import MODELS

from ..utils import GTWeightedAnchorHeadMixin


@MODELS.register_module()
class WeightedRetinaHead(GTWeightedAnchorHeadMixin, RetinaHead):
    """:class:`~mmdet.models.dense_heads.RetinaHead` whose positive anchors'
    classification and box terms are multiplied by their gt's
    ``gt_instances.weights``.

    Negatives keep weight 1 and ``avg_factor`` (the number of positives) is
    unchanged. Without the ``weights`` field the losses equal RetinaHead's
    bit for bit. Same constructor arguments, parameters and state dict keys
    as RetinaHead.
    """
