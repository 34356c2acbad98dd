"""WeightedRPNHead: mmdet's RPNHead bit for bit without weights; with them,
the sampled positive anchors' objectness and box terms are scaled."""
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from mmdet.models.dense_heads import RPNHead
from mmdet_freebies.models.dense_heads import WeightedRPNHead

IMG = 64
STRIDES = (4, 8, 16, 32, 64)
META = dict(img_shape=(IMG, IMG), pad_shape=(IMG, IMG), scale_factor=(1, 1))


def _head(cls, seed=0):
    torch.manual_seed(seed)
    # mmdet's faster-rcnn_r50_fpn rpn_head and train_cfg.rpn, narrow
    return cls(
        in_channels=8,
        feat_channels=8,
        anchor_generator=dict(type='AnchorGenerator', scales=[8],
                              ratios=[0.5, 1.0, 2.0], strides=list(STRIDES)),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                        target_means=[.0, .0, .0, .0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True,
                      loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0),
        train_cfg=ConfigDict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7,
                          neg_iou_thr=0.3, min_pos_iou=0.3,
                          match_low_quality=True, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=64, pos_fraction=0.5,
                         neg_pos_ub=-1, add_gt_as_proposals=False),
            allowed_border=-1, pos_weight=-1, debug=False))


def _gts(boxes, weights=None):
    gts = InstanceData(bboxes=torch.tensor(boxes).reshape(-1, 4).float(),
                       labels=torch.zeros(len(boxes), dtype=torch.long))
    if weights is not None:
        gts.weights = torch.tensor(weights)
    return gts


def _size(s):
    return max(IMG // s, 1)


def _preds(num_imgs=1, seed=1):
    torch.manual_seed(seed)
    return [torch.randn(num_imgs, 3 * c, _size(s), _size(s),
                        requires_grad=True) for s in STRIDES for c in (1, 4)]


def _loss(head, preds, gts_list, seed=3):
    torch.manual_seed(seed)  # the same random samples for every head
    losses = head.loss_by_feat(preds[0::2], preds[1::2], gts_list,
                               [META] * len(gts_list))
    return {k: sum(v) for k, v in losses.items()}


def _flat(maps, channels):
    return torch.cat([
        m.permute(0, 2, 3, 1).reshape(m.size(0), -1, channels) for m in maps
    ], 1)


def test_same_parameters_and_state_dict():
    plain, weighted = _head(RPNHead), _head(WeightedRPNHead)
    assert plain.state_dict().keys() == weighted.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(value, weighted.state_dict()[key]), key
    weighted.load_state_dict(plain.state_dict(), strict=True)


def test_without_weights_equals_mmdet_bit_for_bit():
    gts = [_gts([[10, 12, 40, 44], [30, 2, 62, 20]]),
           _gts(torch.zeros(0, 4).tolist())]
    results = []
    for cls in (RPNHead, WeightedRPNHead):
        head = _head(cls)
        torch.manual_seed(2)
        feats = [torch.randn(2, 8, _size(s), _size(s)) for s in STRIDES]
        cls_scores, bbox_preds = head(feats)
        preds = [p for pair in zip(cls_scores, bbox_preds) for p in pair]
        losses = _loss(head, preds, gts)
        sum(losses.values()).backward()
        results.append((losses, {n: p.grad
                                 for n, p in head.named_parameters()}))
    (plain_losses, plain_grads), (losses, grads) = results
    assert losses.keys() == plain_losses.keys() == {
        'loss_rpn_cls', 'loss_rpn_bbox'}
    for key in losses:
        assert torch.equal(losses[key], plain_losses[key]), key
    for name in grads:
        assert torch.equal(grads[name], plain_grads[name]), name


def test_one_object_weight_against_hand_computation():
    """Weight 0.3 scales the BCE and L1 terms of the sampled positives; the
    sampled negatives and the normaliser (positives plus negatives) are
    unchanged."""
    w = 0.3
    box = [[10, 12, 40, 44]]
    plain = _head(RPNHead)
    preds = _preds()
    losses = _loss(_head(WeightedRPNHead), preds, [_gts(box, [w])])

    sizes = [p.shape[-2:] for p in preds[0::2]]
    anchors, valid = plain.get_anchors(sizes, [META], device='cpu')
    torch.manual_seed(3)
    labels, label_weights, bbox_targets, _, avg_factor = plain.get_targets(
        anchors, valid, [_gts(box)], [META])
    labels = torch.cat(labels, 1)[0]
    label_weights = torch.cat(label_weights, 1)[0]
    bbox_targets = torch.cat(bbox_targets, 1)[0]
    pos = labels == 0
    neg = (labels == 1) & (label_weights > 0)
    assert pos.sum() > 1 and neg.sum() > pos.sum()
    assert avg_factor == pos.sum() + neg.sum()
    logits = _flat(preds[0::2], 1)[0, :, 0].detach()
    deltas = _flat(preds[1::2], 4)[0].detach()
    expected_cls = (F.softplus(logits[neg]).sum() +
                    w * F.softplus(-logits[pos]).sum()) / avg_factor
    expected_bbox = w * (deltas[pos] -
                         bbox_targets[pos]).abs().sum() / avg_factor
    torch.testing.assert_close(losses['loss_rpn_cls'], expected_cls)
    torch.testing.assert_close(losses['loss_rpn_bbox'], expected_bbox)
