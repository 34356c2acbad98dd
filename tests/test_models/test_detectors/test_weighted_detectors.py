"""Whole detectors of this pack's baselines with the weighted heads swapped
in: without weights every loss and gradient equals mmdet's bit for bit,
the loss keys stay mmdet's (so loss post-processors such as
GuidedLossScaling see the same dict), the state dicts load strictly both
ways, and with weights the losses that have positives change."""
import pytest
import torch
from mmengine.structures import InstanceData

from mmdet.registry import MODELS
from mmdet.structures import DetDataSample

IMG = 64
SWAPS = {
    'yolov3_baseline.py': {('bbox_head', ): 'WeightedYOLOV3Head'},
    'retinanet_fl.py': {('bbox_head', ): 'WeightedRetinaHead'},
    'faster_rcnn_biased.py': {
        ('rpn_head', ): 'WeightedRPNHead',
        ('roi_head', ): 'WeightedStandardRoIHead',
        ('roi_head', 'bbox_head'): 'WeightedShared2FCBBoxHead',
    },
}
WEIGHTED = {  # the losses scaled by the object weights
    'yolov3_baseline.py': ('loss_cls', 'loss_conf', 'loss_xy', 'loss_wh'),
    'retinanet_fl.py': ('loss_cls', 'loss_bbox'),
    'faster_rcnn_biased.py': ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls',
                              'loss_bbox'),
}


@pytest.fixture(autouse=True)
def one_thread():
    """Two intra-op threads on a busy 2-core machine make these runs ~10x
    slower; the results do not depend on it."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(num_threads)


def _samples(weights):
    meta = dict(img_shape=(IMG, IMG), ori_shape=(IMG, IMG),
                pad_shape=(IMG, IMG), batch_input_shape=(IMG, IMG),
                scale_factor=(1., 1.))
    boxes = [[[10., 12., 40., 44.], [30., 2., 62., 20.]],
             [[4., 30., 30., 60.]]]
    labels = [[2, 0], [1]]
    samples = []
    for i in range(2):
        sample = DetDataSample(metainfo=meta)
        sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes[i]),
                                           labels=torch.tensor(labels[i]))
        if weights is not None and i == 0:  # the second image has none
            sample.gt_instances.weights = torch.tensor(weights)
        samples.append(sample)
    return samples


def _losses(model, weights=None):
    torch.manual_seed(1)
    inputs = torch.randn(2, 3, IMG, IMG)
    torch.manual_seed(2)  # the same random samplers for both models
    losses = model.loss(inputs, _samples(weights))
    model.parse_losses(losses)[0].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()
             if p.grad is not None}
    model.zero_grad()
    return {k: sum(v) if isinstance(v, list) else v
            for k, v in losses.items()}, grads


@pytest.mark.parametrize('config', sorted(SWAPS))
def test_detector_with_weighted_heads(toy_cfg, config):
    model_cfg = toy_cfg(config).model
    torch.manual_seed(0)
    plain = MODELS.build(model_cfg)
    for path, new_type in SWAPS[config].items():
        node = model_cfg
        for key in path:
            node = node[key]
        node['type'] = new_type
    torch.manual_seed(0)
    weighted = MODELS.build(model_cfg)
    assert weighted.state_dict().keys() == plain.state_dict().keys()
    weighted.load_state_dict(plain.state_dict(), strict=True)
    plain.load_state_dict(weighted.state_dict(), strict=True)

    plain_losses, plain_grads = _losses(plain)
    losses, grads = _losses(weighted)
    assert losses.keys() == plain_losses.keys()
    for key in losses:
        assert torch.equal(losses[key], plain_losses[key]), key
    assert grads.keys() == plain_grads.keys()
    for name in grads:
        assert torch.equal(grads[name], plain_grads[name]), name

    weighted_losses, _ = _losses(weighted, weights=[0.3, 0.6])
    assert weighted_losses.keys() == plain_losses.keys()
    for key in WEIGHTED[config]:
        assert weighted_losses[key] < plain_losses[key], key
