"""WeightedYOLOV3Head: mmdet's YOLOV3Head bit for bit without weights, and
GluonCV's weighting of positive anchors with them."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from mmdet.models.dense_heads import YOLOV3Head
from mmdet_freebies.models.dense_heads import WeightedYOLOV3Head

NUM_CLASSES = 4
IMG = 64
META = dict(img_shape=(IMG, IMG), pad_shape=(IMG, IMG), scale_factor=(1, 1))


def _head(cls, seed=0, label_smoothing=0.0):
    torch.manual_seed(seed)
    # losses and assigner of mmdet's yolov3_d53 config, narrow channels;
    # configs/yolov3_label_smooth.py's class loss with label_smoothing
    loss_cls = dict(type='CrossEntropyLoss', use_sigmoid=True,
                    loss_weight=1.0, reduction='sum')
    if label_smoothing:
        loss_cls.update(type='LabelSmoothCrossEntropyLoss',
                        label_smoothing=label_smoothing)
    return cls(
        num_classes=NUM_CLASSES,
        in_channels=[16, 8, 4],
        out_channels=[16, 8, 4],
        loss_cls=loss_cls,
        loss_conf=dict(type='CrossEntropyLoss', use_sigmoid=True,
                       loss_weight=1.0, reduction='sum'),
        loss_xy=dict(type='CrossEntropyLoss', use_sigmoid=True,
                     loss_weight=2.0, reduction='sum'),
        loss_wh=dict(type='MSELoss', loss_weight=2.0, reduction='sum'),
        train_cfg=ConfigDict(assigner=dict(
            type='GridAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
            min_pos_iou=0)))


def _gts(boxes, labels, weights=None):
    gts = InstanceData(bboxes=torch.tensor(boxes).reshape(-1, 4).float(),
                       labels=torch.tensor(labels, dtype=torch.long))
    if weights is not None:
        gts.weights = torch.tensor(weights)
    return gts


def _pred_maps(num_imgs=1, seed=1):
    torch.manual_seed(seed)
    num_attrib = 5 + NUM_CLASSES
    return [
        torch.randn(num_imgs, 3 * num_attrib, IMG // s, IMG // s,
                    requires_grad=True) for s in (32, 16, 8)
    ]


def _loss(head, pred_maps, gts_list):
    losses = head.loss_by_feat(pred_maps, gts_list, [META] * len(gts_list))
    return {k: sum(v) for k, v in losses.items()}


def _flat(maps, num_attrib):
    return torch.cat([
        m.permute(0, 2, 3, 1).reshape(m.size(0), -1, num_attrib)
        for m in maps
    ], 1)


def test_same_parameters_and_state_dict():
    plain, weighted = _head(YOLOV3Head), _head(WeightedYOLOV3Head)
    assert plain.state_dict().keys() == weighted.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(value, weighted.state_dict()[key]), key
    weighted.load_state_dict(plain.state_dict(), strict=True)


@pytest.mark.parametrize('gts', [
    [_gts([[10, 12, 40, 44]], [2])],
    [_gts([[10, 12, 40, 44], [30, 2, 62, 20]], [2, 0]),
     _gts(torch.zeros(0, 4).tolist(), [])],  # an image without objects
])
def test_without_weights_equals_mmdet_bit_for_bit(gts):
    plain, weighted = _head(YOLOV3Head), _head(WeightedYOLOV3Head)
    torch.manual_seed(2)
    feats = [torch.randn(len(gts), c, IMG // s, IMG // s)
             for c, s in zip((16, 8, 4), (32, 16, 8))]
    results = []
    for head in (plain, weighted):
        losses = _loss(head, list(head(feats)[0]), gts)
        sum(losses.values()).backward()
        grads = {n: p.grad for n, p in head.named_parameters()}
        results.append((losses, grads))
    (plain_losses, plain_grads), (losses, grads) = results
    assert losses.keys() == plain_losses.keys() == {
        'loss_cls', 'loss_conf', 'loss_xy', 'loss_wh'}
    for key in losses:
        assert torch.equal(losses[key], plain_losses[key]), key
    for name in grads:
        assert torch.equal(grads[name], plain_grads[name]), name


def test_unit_weights_equal_mmdet_bit_for_bit():
    """The weighted code path itself reduces to mmdet's with weights 1."""
    boxes, labels = [[10, 12, 40, 44], [30, 2, 62, 20]], [2, 0]
    plain_maps, maps = _pred_maps(), _pred_maps()
    plain = _loss(_head(YOLOV3Head), plain_maps, [_gts(boxes, labels)])
    losses = _loss(_head(WeightedYOLOV3Head), maps,
                   [_gts(boxes, labels, [1., 1.])])
    sum(plain.values()).backward()
    sum(losses.values()).backward()
    for key in losses:
        assert torch.equal(losses[key], plain[key]), key
    for plain_map, pred_map in zip(plain_maps, maps):
        assert torch.equal(pred_map.grad, plain_map.grad)


@pytest.mark.parametrize('eps', [0.0, 1 / 40])
def test_one_object_weight_against_hand_computation(eps):
    """Weight 0.3 scales every term of the positive anchors by 0.3 (the
    objectness one with the hard target 1); negatives are unchanged and
    ignored anchors stay out, as GluonCV's YOLOV3Loss. With the label
    smoothing of configs/yolov3_mixup.py (eps = 1/40) the class targets are
    1 - eps/2 and eps/2, scaled alike."""
    w = 0.3
    plain = _head(YOLOV3Head, label_smoothing=eps)
    weighted = _head(WeightedYOLOV3Head, label_smoothing=eps)
    box, label = [[10, 12, 40, 44]], [2]
    maps = _pred_maps()
    losses = _loss(weighted, maps, [_gts(box, label, [w])])

    # mmdet's own targets for the positives, negatives and ignored anchors
    anchors = plain.prior_generator.grid_priors(
        [m.shape[-2:] for m in maps], device='cpu')
    flags = plain.responsible_flags([m.shape[-2:] for m in maps],
                                    _gts(box, label).bboxes, 'cpu')
    target_maps, neg_maps = plain.get_targets([anchors], [flags],
                                              [_gts(box, label)])
    target = torch.cat(target_maps, 1)[0]
    neg = torch.cat(neg_maps, 1)[0].bool()
    pred = _flat(maps, plain.num_attrib)[0].detach()
    pos = target[:, 4] == 1
    assert pos.sum() == 1 and neg.sum() > 0 and (~pos & ~neg).sum() > 0

    bce = F.binary_cross_entropy_with_logits
    smoothed = target[pos, 5:] * (1 - eps) + eps / 2
    assert sorted(smoothed.unique().tolist()) == pytest.approx(
        [eps / 2, 1 - eps / 2])
    expected = dict(
        loss_cls=w * bce(pred[pos, 5:], smoothed, reduction='sum'),
        loss_conf=(F.softplus(pred[neg, 4]).sum() +
                   w * F.softplus(-pred[pos, 4]).sum()),
        loss_xy=2 * w * bce(pred[pos, :2], target[pos, :2], reduction='sum'),
        loss_wh=2 * w * ((pred[pos, 2:4] - target[pos, 2:4])**2).sum())
    for key, value in expected.items():
        torch.testing.assert_close(losses[key], value, rtol=1e-6, atol=0)

    # the gradients of the positive anchor are scaled, the others not
    plain_maps = _pred_maps()
    sum(_loss(plain, plain_maps, [_gts(box, label)]).values()).backward()
    sum(losses.values()).backward()
    grad = _flat([m.grad for m in maps], plain.num_attrib)[0]
    plain_grad = _flat([m.grad for m in plain_maps], plain.num_attrib)[0]
    torch.testing.assert_close(grad[pos], w * plain_grad[pos])
    assert torch.equal(grad[~pos], plain_grad[~pos])


def test_mixed_batch_weights_only_the_weighted_image():
    """An image without weights in a batch with weights counts with 1."""
    gts0 = ([[10, 12, 40, 44]], [2])
    gts1 = ([[30, 2, 62, 20], [4, 30, 30, 60]], [0, 1])
    maps = _pred_maps(num_imgs=2)
    weighted = _head(WeightedYOLOV3Head)
    batch = _loss(weighted, maps, [_gts(*gts0, [0.3]), _gts(*gts1)])
    alone0 = _loss(weighted, [m[:1] for m in maps], [_gts(*gts0, [0.3])])
    alone1 = _loss(_head(YOLOV3Head), [m[1:] for m in maps], [_gts(*gts1)])
    for key in batch:
        torch.testing.assert_close(batch[key], alone0[key] + alone1[key])


def test_each_positive_gets_its_own_objects_weight():
    """The weight column holds the weight of the object each positive anchor
    is assigned to (told apart by their labels), 1 elsewhere."""
    boxes, labels = [[10, 12, 40, 44], [30, 2, 62, 20]], [2, 0]
    head = _head(WeightedYOLOV3Head)
    maps = _pred_maps()
    sizes = [m.shape[-2:] for m in maps]
    gts = _gts(boxes, labels, [0.3, 0.8])
    target_maps, _ = head.get_targets(
        [head.prior_generator.grid_priors(sizes, device='cpu')],
        [head.responsible_flags(sizes, gts.bboxes, 'cpu')], [gts])
    target = torch.cat(target_maps, 1)[0]
    assert target.size(-1) == head.num_attrib + 1
    pos = target[:, 4] == 1
    label = target[:, 5:-1].argmax(-1)
    expected = torch.ones(len(target))
    expected[pos & (label == 2)] = 0.3
    expected[pos & (label == 0)] = 0.8
    assert (pos & (label == 2)).any() and (pos & (label == 0)).any()
    assert torch.equal(target[:, -1], expected)


def test_bad_weights_raise():
    gts = _gts([[10, 12, 40, 44]], [2])
    gts.weights = torch.tensor([1])
    with pytest.raises(TypeError, match=r'gt_instances\.weights'):
        _loss(_head(WeightedYOLOV3Head), _pred_maps(), [gts])
