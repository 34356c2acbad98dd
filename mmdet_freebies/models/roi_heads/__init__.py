
from .weighted_roi_head import (WeightedShared2FCBBoxHead,  # noqa: F401
                                WeightedStandardRoIHead)
from .sampling_free_bbox_head import SamplingFreeShared2FCBBoxHead  # noqa: F401,E501
