"""unwrap_detector: the detector behind the wrappers the runner may hold."""
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel
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


def test_unwrap_detector_through_ddp(tmp_path):
    """The wrapper ``tools/dist_train.sh`` runs the hooks with (the two-process
    training test also covers it, but only end to end)."""
    detector = _Detector(1, 1)
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store',
                            rank=0, world_size=1)
    try:
        assert unwrap_detector(
            MMDistributedDataParallel(module=detector)) is detector
    finally:
        dist.destroy_process_group()
