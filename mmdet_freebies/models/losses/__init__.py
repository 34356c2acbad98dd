
from .label_smooth_cross_entropy_loss import (  # noqa: F401
    LabelSmoothCrossEntropyLoss)
from .balanced_l1_loss import FusedBalancedL1Loss  # noqa: F401
