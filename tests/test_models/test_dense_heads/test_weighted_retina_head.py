"""WeightedRetinaHead: mmdet's RetinaHead bit for bit without weights; with
them, the positive anchors' focal and box terms are scaled."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from mmdet.models.dense_heads import RetinaHead
from mmdet_freebies.models.dense_heads import WeightedRetinaHead

NUM_CLASSES = 4
IMG = 64
STRIDES = (8, 16, 32, 64, 128)
META = dict(img_shape=(IMG, IMG), pad_shape=(IMG, IMG), scale_factor=(1, 1))


def _head(cls, allowed_border=-1, seed=0, ignore_iof_thr=-1):
    torch.manual_seed(seed)
    # mmdet's retinanet_r50_fpn config, narrow channels
    return cls(
        num_classes=NUM_CLASSES,
        in_channels=8,
        stacked_convs=1,
        feat_channels=8,
        train_cfg=ConfigDict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5,
                          neg_iou_thr=0.4, min_pos_iou=0,
                          ignore_iof_thr=ignore_iof_thr),
            sampler=dict(type='PseudoSampler'),
            allowed_border=allowed_border, pos_weight=-1, debug=False),
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                              scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                              strides=list(STRIDES)),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                        target_means=[.0, .0, .0, .0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0,
                      alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0))


def _gts(boxes, labels, weights=None):
    gts = InstanceData(bboxes=torch.tensor(boxes).reshape(-1, 4).float(),
                       labels=torch.tensor(labels, dtype=torch.long))
    if weights is not None:
        gts.weights = torch.tensor(weights)
    return gts


def _feats(num_imgs, seed=2):
    torch.manual_seed(seed)
    return [torch.randn(num_imgs, 8, IMG // s if s < IMG else 1,
                        IMG // s if s < IMG else 1) for s in STRIDES]


def _preds(num_imgs=1, seed=1):
    torch.manual_seed(seed)
    return [torch.randn(num_imgs, 9 * c, IMG // s if s < IMG else 1,
                        IMG // s if s < IMG else 1, requires_grad=True)
            for s in STRIDES for c in (NUM_CLASSES, 4)]


def _loss(head, preds, gts_list):
    losses = head.loss_by_feat(preds[0::2], preds[1::2], gts_list,
                               [META] * len(gts_list))
    return {k: sum(v) for k, v in losses.items()}


def _targets(head, preds, gts_list, ignored_list=None):
    sizes = [p.shape[-2:] for p in preds[0::2]]
    metas = [META] * len(gts_list)
    anchors, valid = head.get_anchors(sizes, metas, device='cpu')
    labels, label_weights, bbox_targets, bbox_weights, avg = \
        head.get_targets(anchors, valid, gts_list, metas, ignored_list)
    return (torch.cat(labels, 1), torch.cat(label_weights, 1),
            torch.cat(bbox_targets, 1), torch.cat(bbox_weights, 1), avg)


def _flat(maps, channels):
    return torch.cat([
        m.permute(0, 2, 3, 1).reshape(m.size(0), -1, channels) for m in maps
    ], 1)


def _focal(logits, targets, gamma=2.0, alpha=0.25):
    """Lin et al., "Focal Loss for Dense Object Detection", Eq. (5), summed
    over classes per anchor."""
    p = logits.sigmoid()
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    ce = F.binary_cross_entropy_with_logits(logits, targets,
                                            reduction='none')
    return (alpha_t * (1 - p_t)**gamma * ce).sum(-1)


def test_same_parameters_and_state_dict():
    plain, weighted = _head(RetinaHead), _head(WeightedRetinaHead)
    assert plain.state_dict().keys() == weighted.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(value, weighted.state_dict()[key]), key
    weighted.load_state_dict(plain.state_dict(), strict=True)


@pytest.mark.parametrize('allowed_border', [-1, 0])
def test_without_weights_equals_mmdet_bit_for_bit(allowed_border):
    gts = [_gts([[10, 12, 40, 44], [30, 2, 62, 20]], [2, 0]),
           _gts(torch.zeros(0, 4).tolist(), [])]
    results = []
    for cls in (RetinaHead, WeightedRetinaHead):
        head = _head(cls, allowed_border)
        cls_scores, bbox_preds = head(_feats(2))
        preds = [p for pair in zip(cls_scores, bbox_preds) for p in pair]
        losses = _loss(head, preds, gts)
        sum(losses.values()).backward()
        results.append((losses, {n: p.grad
                                 for n, p in head.named_parameters()}))
    (plain_losses, plain_grads), (losses, grads) = results
    assert losses.keys() == plain_losses.keys() == {'loss_cls', 'loss_bbox'}
    for key in losses:
        assert torch.equal(losses[key], plain_losses[key]), key
    for name in grads:
        assert torch.equal(grads[name], plain_grads[name]), name


@pytest.mark.parametrize('allowed_border', [-1, 0])
def test_one_object_weight_against_hand_computation(allowed_border):
    """Weight 0.3: the focal terms of the positive anchors (all C classes of
    each) and their L1 terms are scaled by 0.3; negatives are unchanged;
    the normaliser stays the number of positives."""
    w = 0.3
    box, label = [[10, 12, 40, 44]], [2]
    plain = _head(RetinaHead, allowed_border)
    weighted = _head(WeightedRetinaHead, allowed_border)
    preds = _preds()
    losses = _loss(weighted, preds, [_gts(box, label, [w])])

    labels, label_weights, bbox_targets, _, num_pos = _targets(
        plain, preds, [_gts(box, label)])
    labels, label_weights, bbox_targets = labels[0], label_weights[0], \
        bbox_targets[0]
    pos = labels < NUM_CLASSES
    neg = (labels == NUM_CLASSES) & (label_weights > 0)
    assert pos.sum() == num_pos > 1 and (~pos & ~neg).any()
    logits = _flat(preds[0::2], NUM_CLASSES)[0].detach()
    deltas = _flat(preds[1::2], 4)[0].detach()
    onehot = F.one_hot(labels, NUM_CLASSES + 1)[:, :NUM_CLASSES].float()
    focal = _focal(logits, onehot)
    expected_cls = (focal[neg].sum() + w * focal[pos].sum()) / num_pos
    expected_bbox = w * (deltas[pos] - bbox_targets[pos]).abs().sum() / num_pos
    torch.testing.assert_close(losses['loss_cls'], expected_cls)
    torch.testing.assert_close(losses['loss_bbox'], expected_bbox)


def test_two_objects_get_their_own_weights():
    """Targets: each positive anchor's label and box weights are mmdet's
    times the weight of its object (told apart by label)."""
    boxes, labels = [[10, 12, 40, 44], [30, 2, 62, 20]], [2, 0]
    preds = _preds()
    plain = _targets(_head(RetinaHead), preds, [_gts(boxes, labels)])
    weighted = _targets(_head(WeightedRetinaHead), preds,
                        [_gts(boxes, labels, [0.3, 0.8])])
    anchor_labels = plain[0]
    scale = torch.ones_like(plain[1])
    scale[anchor_labels == 2] = 0.3
    scale[anchor_labels == 0] = 0.8
    assert (anchor_labels == 2).any() and (anchor_labels == 0).any()
    assert torch.equal(weighted[0], plain[0])
    assert torch.equal(weighted[1], plain[1] * scale)
    assert torch.equal(weighted[2], plain[2])
    assert torch.equal(weighted[3], plain[3] * scale[..., None])
    assert weighted[4] == plain[4]


def test_ignored_gts_stay_ignored_and_weights_follow_the_kept_gts():
    """``ignore_iof_thr=0.5`` and an ignored object (in its own
    InstanceData, with its weight, as PackDetInputsWithWeights splits
    them): the anchors it covers keep label weight 0, and the positives
    take the weight of the kept gt they are assigned to."""
    boxes, labels = [[10, 12, 40, 44], [30, 2, 62, 20]], [2, 0]
    ignored = _gts([[0, 40, 24, 64]], [1], [0.6])
    preds = _preds()
    plain = _targets(_head(RetinaHead, ignore_iof_thr=0.5), preds,
                     [_gts(boxes, labels)], [ignored])
    weighted = _targets(_head(WeightedRetinaHead, ignore_iof_thr=0.5),
                        preds, [_gts(boxes, labels, [0.3, 0.8])], [ignored])
    # the ignored object takes anchors out of the loss that are negatives
    # without it
    unignored = _targets(_head(RetinaHead), preds, [_gts(boxes, labels)])
    newly_ignored = (plain[1] == 0) & (unignored[1] > 0)
    assert newly_ignored.any()
    assert torch.equal(weighted[1][newly_ignored],
                       torch.zeros(int(newly_ignored.sum())))
    scale = torch.ones_like(plain[1])
    scale[plain[0] == 2] = 0.3
    scale[plain[0] == 0] = 0.8
    assert (plain[0] == 2).any() and (plain[0] == 0).any()
    assert torch.equal(weighted[0], plain[0])
    assert torch.equal(weighted[1], plain[1] * scale)
    assert torch.equal(weighted[3], plain[3] * scale[..., None])
    assert weighted[4] == plain[4]
