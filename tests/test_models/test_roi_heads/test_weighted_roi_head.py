"""WeightedStandardRoIHead + WeightedShared2FCBBoxHead: mmdet's heads bit for
bit without weights; with them, the positive RoIs' CE and box terms are
scaled by their object's weight. Also the whole Faster R-CNN with the
weighted RPN and RoI heads against mmdet's."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox2roi
from mmdet_freebies.models.roi_heads import (WeightedShared2FCBBoxHead,
                                             WeightedStandardRoIHead)
from mmdet_freebies.models.roi_heads.weighted_roi_head import \
    GTWeightedBBoxHeadMixin

NUM_CLASSES = 4
IMG = 64
STRIDES = (4, 8, 16, 32)
GT_BOX, GT_LABEL = [10., 12., 40., 44.], 2
POS_PROPOSALS = [[11., 12., 40., 44.], [10., 13., 41., 45.],
                 [9., 11., 39., 43.]]
NEG_PROPOSALS = [[45., 45., 60., 60.], [0., 40., 20., 62.],
                 [40., 0., 62., 20.]]


def _roi_head_cfg(roi_type='StandardRoIHead',
                  bbox_type='Shared2FCBBoxHead'):
    # mmdet's faster-rcnn_r50_fpn roi_head and train_cfg.rcnn, narrow
    return dict(
        type=roi_type,
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=8,
            featmap_strides=list(STRIDES)),
        bbox_head=dict(
            type=bbox_type,
            in_channels=8,
            fc_out_channels=16,
            roi_feat_size=7,
            num_classes=NUM_CLASSES,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                            target_means=[0., 0., 0., 0.],
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False,
                          loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=ConfigDict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5,
                          neg_iou_thr=0.5, min_pos_iou=0.5,
                          match_low_quality=False, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25,
                         neg_pos_ub=-1, add_gt_as_proposals=True),
            pos_weight=-1, debug=False))


def _build(weighted, seed=0):
    torch.manual_seed(seed)
    if weighted:
        return MODELS.build(_roi_head_cfg('WeightedStandardRoIHead',
                                          'WeightedShared2FCBBoxHead'))
    return MODELS.build(_roi_head_cfg())


def _sample(boxes, labels, weights=None):
    sample = DetDataSample(metainfo=dict(img_shape=(IMG, IMG),
                                         pad_shape=(IMG, IMG)))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))
    if weights is not None:
        sample.gt_instances.weights = torch.tensor(weights)
    return sample


def _proposals():
    boxes = torch.tensor(POS_PROPOSALS + NEG_PROPOSALS)
    return InstanceData(bboxes=boxes, scores=torch.ones(len(boxes)))


def _feats(num_imgs=1, seed=1):
    torch.manual_seed(seed)
    return tuple(torch.randn(num_imgs, 8, IMG // s, IMG // s,
                             requires_grad=True) for s in STRIDES)


def _loss(head, feats, samples, seed=2):
    torch.manual_seed(seed)  # the same random samples for every head
    return head.loss(feats, [_proposals() for _ in samples], samples)


def test_same_parameters_and_state_dict():
    plain, weighted = _build(False), _build(True)
    assert isinstance(weighted, WeightedStandardRoIHead)
    assert isinstance(weighted.bbox_head, WeightedShared2FCBBoxHead)
    assert plain.state_dict().keys() == weighted.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(value, weighted.state_dict()[key]), key
    weighted.load_state_dict(plain.state_dict(), strict=True)


def test_unweighted_bbox_head_is_refused_at_build_time():
    with pytest.raises(TypeError, match="bbox_head.type='Shared2FCBBoxHead'"):
        MODELS.build(_roi_head_cfg('WeightedStandardRoIHead'))


def test_weighted_bbox_head_in_a_plain_roi_head_warns():
    """The other pairing cannot be refused at build time (the bbox head
    does not know its RoI head), so it warns when training: weights that
    reach a plain StandardRoIHead are never applied."""
    head = MODELS.build(_roi_head_cfg(bbox_type='WeightedShared2FCBBoxHead'))
    samples = [_sample([GT_BOX], [GT_LABEL], weights=[0.5])]
    with pytest.warns(UserWarning, match='use WeightedStandardRoIHead'):
        _loss(head, _feats(), samples)


def test_without_weights_equals_mmdet_bit_for_bit():
    samples = [_sample([GT_BOX, [30., 2., 62., 20.]], [GT_LABEL, 0]),
               _sample([], [])]
    results = []
    for weighted in (False, True):
        head, feats = _build(weighted), _feats(2)
        losses = _loss(head, feats, samples)
        (losses['loss_cls'] + losses['loss_bbox']).backward()
        grads = {n: p.grad for n, p in head.named_parameters()}
        results.append((losses, grads, [f.grad for f in feats]))
    (plain_losses, plain_grads, plain_fgrads), (losses, grads, fgrads) = \
        results
    assert losses.keys() == plain_losses.keys() == {
        'loss_cls', 'acc', 'loss_bbox'}
    for key in losses:
        assert torch.equal(losses[key], plain_losses[key]), key
    for name in grads:
        assert torch.equal(grads[name], plain_grads[name]), name
    for fgrad, plain_fgrad in zip(fgrads, plain_fgrads):
        assert torch.equal(fgrad, plain_fgrad)


@pytest.mark.parametrize('w,num_cls', [(0.3, 7), (0.0, 3)])
def test_one_object_weight_against_hand_computation(w, num_cls):
    """Weight 0.3 on the one object: the CE of its 4 positive RoIs (the gt
    and 3 proposals) and their L1 terms are scaled by 0.3; the 3 negatives
    are unchanged; both normalisers stay 7, all sampled RoIs. Weight 0
    takes the object's RoIs out of the CE normaliser too (mmdet's BBoxHead
    counts the RoIs of non-zero label weight): the negatives' mean CE."""
    plain, weighted = _build(False), _build(True)
    feats = _feats()
    plain_losses = _loss(plain, feats, [_sample([GT_BOX], [GT_LABEL])])
    losses = _loss(weighted, feats, [_sample([GT_BOX], [GT_LABEL], [w])])
    assert weighted._batch_gt_weights is None  # nothing kept after the call

    with torch.no_grad():
        pos_rois = bbox2roi([torch.tensor([GT_BOX] + POS_PROPOSALS)])
        neg_rois = bbox2roi([torch.tensor(NEG_PROPOSALS)])
        pos_scores = weighted._bbox_forward(feats, pos_rois)['cls_score']
        neg_scores = weighted._bbox_forward(feats, neg_rois)['cls_score']
    ce_pos = F.cross_entropy(pos_scores, torch.full((4, ), GT_LABEL),
                             reduction='sum')
    ce_neg = F.cross_entropy(neg_scores, torch.full((3, ), NUM_CLASSES),
                             reduction='sum')
    torch.testing.assert_close(plain_losses['loss_cls'],
                               (ce_neg + ce_pos) / 7)
    torch.testing.assert_close(losses['loss_cls'],
                               (ce_neg + w * ce_pos) / num_cls)
    torch.testing.assert_close(losses['loss_bbox'],
                               w * plain_losses['loss_bbox'])
    assert plain_losses['loss_bbox'] > 0
    assert torch.equal(losses['acc'], plain_losses['acc'])


@pytest.mark.parametrize('concat', [True, False])
def test_bbox_head_targets_weight_only_weighted_images(concat):
    """Two images, the first with weights (0.3, 0.8), the second without:
    each positive's label and box weights are mmdet's times its object's
    weight; the second image's targets are mmdet's."""
    head = _build(True)
    samples = [_sample([GT_BOX, [36., 36., 60., 62.]], [GT_LABEL, 0]),
               _sample([GT_BOX], [1])]
    torch.manual_seed(2)
    results = []
    for sample in samples:
        proposals = _proposals()
        proposals.priors = proposals.pop('bboxes')
        assign = head.bbox_assigner.assign(proposals, sample.gt_instances)
        results.append(head.bbox_sampler.sample(assign, proposals,
                                                sample.gt_instances))
    plain = super(GTWeightedBBoxHeadMixin, head.bbox_head).get_targets(
        results, head.train_cfg, concat=False)
    results[0].pos_gt_weights = torch.tensor([0.3, 0.8])[
        results[0].pos_assigned_gt_inds]
    # one result that did not pass through a weighted RoI head is enough
    with pytest.warns(UserWarning, match='does not pass per-object weights'):
        head.bbox_head.get_targets(results, head.train_cfg)
    results[1].pos_gt_weights = None  # as WeightedStandardRoIHead sets it
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        weighted = head.bbox_head.get_targets(results, head.train_cfg,
                                              concat=concat)
    if concat:  # back to per-image lists
        weighted = [t.split([len(r.priors) for r in results])
                    for t in weighted]
    labels = plain[0][0]
    scale = torch.ones_like(plain[1][0])
    scale[labels == GT_LABEL] = 0.3
    scale[labels == 0] = 0.8
    assert (labels == GT_LABEL).any() and (labels == 0).any()
    assert (labels == NUM_CLASSES).any()
    assert torch.equal(weighted[1][0], plain[1][0] * scale)
    assert torch.equal(weighted[3][0], plain[3][0] * scale[:, None])
    for i in (0, 2):
        assert torch.equal(weighted[i][0], plain[i][0])
    for i in range(4):
        assert torch.equal(weighted[i][1], plain[i][1])


def test_roi_head_sends_each_image_its_weights_by_gt_index():
    """Two objects of different weights in the first image, none given in
    the second: each positive gets its own object's weight (gt_inds are
    1-based in the assign result, 0-based here), and the second image none.
    With one object an off-by-one or a swap of images would not show."""
    head = _build(True)
    samples = [_sample([GT_BOX, [36., 36., 60., 62.]], [GT_LABEL, 0],
                       [0.3, 0.8]),
               _sample([GT_BOX], [1])]
    seen = []
    get_targets = head.bbox_head.get_targets

    def spy(results, cfg, concat=True):
        seen.extend(results)
        return get_targets(results, cfg, concat)

    head.bbox_head.get_targets = spy
    _loss(head, _feats(2), samples)
    first, second = seen
    gt = first.pos_assigned_gt_inds
    assert (gt == 0).any() and (gt == 1).any()
    assert torch.equal(first.pos_gt_weights, torch.tensor([0.3, 0.8])[gt])
    assert second.pos_gt_weights is None
