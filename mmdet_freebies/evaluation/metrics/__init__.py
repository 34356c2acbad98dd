
from .detection_error_metric import DetectionErrorMetric  # noqa: F401
