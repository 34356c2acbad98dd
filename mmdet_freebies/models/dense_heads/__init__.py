
from .sampling_free_paa_head import SamplingFreePAAHead  # noqa: F401
from .weighted_retina_head import WeightedRetinaHead  # noqa: F401
from .weighted_rpn_head import WeightedRPNHead  # noqa: F401
from .weighted_yolov3_head import WeightedYOLOV3Head  # noqa: F401
