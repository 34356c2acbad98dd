
from .balanced_l1_loss import FusedBalancedL1Loss  # noqa: F401
