
from .iou_balanced_sampler import IoUBalancedSampler  # noqa: F401
