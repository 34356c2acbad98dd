"""unwrap_detector: the detector behind the wrappers the runner may hold."""
from torch import nn

from mmdet.models import DetTTAModel
from mmdet_freebies.engine.hooks.utils import unwrap_detector


class _Detector(nn.Linear):

    def test_step(self, data):  # what BaseTTAModel requires of its module
        return data


def test_unwrap_detector_through_a_tta_model():
    detector = _Detector(1, 1)
    assert unwrap_detector(detector) is detector
    tta = DetTTAModel(module=detector, tta_cfg=dict(
        nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    assert unwrap_detector(tta) is detector
