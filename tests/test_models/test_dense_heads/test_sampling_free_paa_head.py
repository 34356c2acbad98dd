"""SamplingFreePAAHead: the GMM reassignment score is the official
sampling-free PAA's, r * CE + GIoU with r = sum(GIoU of the candidates) /
sum(CE over all anchors) over the batch; mmdet's PAAHead adds CE + 1.3 GIoU."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from mmdet.models.dense_heads import PAAHead
from mmdet.structures.bbox import bbox_overlaps
from mmdet_freebies.models.dense_heads import SamplingFreePAAHead

NUM_CLASSES = 3
IMG = 64
STRIDES = (8, 16, 32, 64, 128)
META = dict(img_shape=(IMG, IMG), pad_shape=(IMG, IMG), scale_factor=(1, 1))


def _head(cls):
    torch.manual_seed(0)
    # mmdet's paa_r50_fpn_1x_coco head with CE, narrow channels
    return cls(
        num_classes=NUM_CLASSES, in_channels=8, stacked_convs=1,
        feat_channels=8, topk=9, reg_decoded_bbox=True, score_voting=True,
        norm_cfg=dict(type='GN', num_groups=4, requires_grad=True),
        train_cfg=ConfigDict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.1,
                          neg_iou_thr=0.1, min_pos_iou=0,
                          ignore_iof_thr=-1),
            allowed_border=-1, pos_weight=-1, debug=False),
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0],
                              octave_base_scale=8, scales_per_octave=1,
                              strides=list(STRIDES)),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                        target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True,
                      loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=1.3),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True,
                             loss_weight=0.5))


def _inputs():
    torch.manual_seed(1)
    feats = [torch.randn(2, 8, -(-IMG // s), -(-IMG // s)) for s in STRIDES]
    gts = [InstanceData(bboxes=torch.tensor([[4., 6, 30, 40],
                                             [20, 20, 60, 50]]),
                        labels=torch.tensor([0, 2])),
           InstanceData(bboxes=torch.tensor([[10., 8, 50, 58]]),
                        labels=torch.tensor([1]))]
    return feats, gts


def _scores(head, monkeypatch):
    """The loss dict and the scores each image's reassignment got."""
    seen = []
    reassign = PAAHead.paa_reassign

    def spy(self, pos_losses, *args):
        seen.append(pos_losses.detach().clone())
        return reassign(self, pos_losses, *args)

    monkeypatch.setattr(PAAHead, 'paa_reassign', spy)
    feats, gts = _inputs()
    losses = head.loss_by_feat(*head(feats), gts, [META, META])
    return losses, seen


def _official(head):
    """The official score computed from the IoU-based targets directly."""
    feats, gts = _inputs()
    cls_scores, bbox_preds, _ = head(feats)
    anchors, valid = head.get_anchors([c.shape[-2:] for c in cls_scores],
                                      [META, META], device='cpu')
    labels, label_weights, bbox_targets, _, pos_inds, _ = head.get_targets(
        anchors, valid, gts, [META, META])
    cls_sum, reg_sum, terms = 0, 0, []
    for i in range(2):
        score = torch.cat([c[i].permute(1, 2, 0).reshape(-1, NUM_CLASSES)
                           for c in cls_scores])
        delta = torch.cat([b[i].permute(1, 2, 0).reshape(-1, 4)
                           for b in bbox_preds])
        onehot = F.one_hot(labels[i], NUM_CLASSES + 1)[:, :NUM_CLASSES]
        ce = F.binary_cross_entropy_with_logits(
            score, onehot.float(), reduction='none') * label_weights[i][:,
                                                                        None]
        boxes = head.bbox_coder.decode(torch.cat(anchors[i]), delta)
        giou = 1 - bbox_overlaps(boxes[pos_inds[i]],
                                 bbox_targets[i][pos_inds[i]], mode='giou',
                                 is_aligned=True)
        cls_sum, reg_sum = cls_sum + ce.sum(), reg_sum + giou.sum()
        terms.append((ce[pos_inds[i]].sum(1), giou))
    return [(cls * reg_sum / cls_sum + giou).detach() for cls, giou in terms]


def test_reassignment_score_is_the_official_guided_one(monkeypatch):
    head = _head(SamplingFreePAAHead)
    losses, seen = _scores(head, monkeypatch)
    expected = _official(head)
    assert [len(s) for s in seen] == [len(e) for e in expected]
    assert all(len(s) > 3 for s in seen)  # candidates in both images
    for got, want in zip(seen, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert set(losses) == {'loss_cls', 'loss_bbox', 'loss_iou'}
    # the batch's sums live only inside one loss_by_feat call
    assert not hasattr(head, '_cls_sum') and not hasattr(head, '_reg_sum')


def test_mmdet_paa_head_scores_otherwise(monkeypatch):
    """mmdet's score, CE + 1.3 GIoU, is mostly classification with CE: the
    guided one is not it (the test above could pass on mmdet's head
    otherwise)."""
    head = _head(PAAHead)
    _, seen = _scores(head, monkeypatch)
    for got, want in zip(seen, _official(head)):
        assert got.shape == want.shape
        assert not torch.allclose(got, want, rtol=1e-3)
        assert (got > want).all()


def test_error_in_a_call_leaves_no_batch_state():
    head = _head(SamplingFreePAAHead)
    feats, gts = _inputs()
    with pytest.raises(ValueError, match='Target size'):
        head.loss_by_feat(*head(feats), gts, [META])  # one meta, two images
    assert not hasattr(head, '_cls_sum')
