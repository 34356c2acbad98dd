from .gt_weights import GTWeightedAnchorHeadMixin, get_gt_weights

__all__ = ['GTWeightedAnchorHeadMixin', 'get_gt_weights']
