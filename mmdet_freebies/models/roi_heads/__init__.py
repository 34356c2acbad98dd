
from .weighted_roi_head import (WeightedShared2FCBBoxHead,  # noqa: F401
                                WeightedStandardRoIHead)
