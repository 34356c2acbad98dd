
from .keep_all_sampler import KeepAllSampler  # noqa: F401
from .iou_balanced_sampler import IoUBalancedSampler  # noqa: F401
