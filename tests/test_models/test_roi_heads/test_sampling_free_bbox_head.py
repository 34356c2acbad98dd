"""Non-sampling Faster R-CNN: the RPN on all valid anchors (config only), the
RoI head on all proposals (KeepAllSampler, see test_keep_all_sampler.py) with
the official box-loss normalisation (SamplingFreeShared2FCBBoxHead), checked
by hand."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData

from mmdet.registry import MODELS
from mmdet.utils import register_all_modules

from helpers import repo_config

register_all_modules()


def _rpn_head():
    cfg = repo_config('faster_rcnn_rpn_sf.py')
    head = cfg.model.rpn_head
    # One level of 32x32 anchors every 16 px on a 64x64 image: a 4x4 grid.
    head.update(in_channels=1, feat_channels=1,
                anchor_generator=dict(type='AnchorGenerator', scales=[2],
                                      ratios=[1.0], strides=[16]),
                train_cfg=cfg.model.train_cfg.rpn)
    return MODELS.build(head)


def _smooth_l1(x, beta):
    x = x.abs()
    return torch.where(x < beta, 0.5 * x**2 / beta, x - 0.5 * beta)


def test_rpn_trains_on_all_valid_anchors_normalised_by_num_pos():
    torch.manual_seed(0)
    head = _rpn_head()
    assert type(head.sampler).__name__ == 'PseudoSampler'
    cls = torch.randn(1, 1, 4, 4)
    reg = torch.randn(1, 4, 4, 4) * 0.2  # residuals on both sides of 1/9
    # mmdet centres anchors on the grid points (16x, 16y): anchor (y, x) is
    # [16x - 16, 16y - 16, 16x + 16, 16y + 16]. The gts are anchors (2, 2)
    # and (1, 1): two positives, so a missing division by num_pos shows.
    gt = InstanceData(bboxes=torch.tensor([[16., 16., 48., 48.],
                                           [0., 0., 32., 32.]]),
                      labels=torch.tensor([0, 0]))
    meta = dict(img_shape=(64, 64), pad_shape=(64, 64))
    losses = head.loss_by_feat([cls], [reg], [gt], [meta])
    # allowed_border=0 keeps the anchors with x1, y1 >= 0 and x2, y2 < 64:
    # the 2x2 with x, y in {1, 2}. (2, 2) and (1, 1) are positive; (1, 2)
    # and (2, 1) have IoU 1/3 with either gt (ignored, between 0.3 and
    # 0.7). BCE summed over the valid anchors / num_pos (= 2).
    logits = cls[0, 0]
    expected_cls = (
        F.binary_cross_entropy_with_logits(logits[2, 2], t1()) +
        F.binary_cross_entropy_with_logits(logits[1, 1], t1())) / 2
    assert losses['loss_rpn_cls'][0].item() == pytest.approx(
        expected_cls.item(), rel=1e-6)
    # The target deltas are 0: the official 0.5 x smooth L1 (beta 1/9)
    # averaged over the 4 coordinates of the positives = sum / (8 x 2).
    deltas = torch.stack([reg[0, :, 2, 2], reg[0, :, 1, 1]])
    assert (deltas.abs() < 1 / 9).any() and (deltas.abs() > 1 / 9).any()
    expected_bbox = _smooth_l1(deltas, 1 / 9).sum() / 16
    assert losses['loss_rpn_bbox'][0].item() == pytest.approx(
        expected_bbox.item(), rel=1e-6)


def t1():
    return torch.tensor(1.)


def t0():
    return torch.tensor(0.)


def _bbox_head(type_, loss_bbox=dict(type='L1Loss', loss_weight=1.0),
               **kwargs):
    return MODELS.build(dict(
        type=type_, in_channels=2, fc_out_channels=8, roi_feat_size=1,
        num_classes=3,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                        target_means=[0.] * 4, target_stds=[1.] * 4),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False,
                      loss_weight=1.0),
        loss_bbox=loss_bbox, **kwargs))


def _roi_batch(labels):
    torch.manual_seed(1)
    n = len(labels)
    labels = torch.tensor(labels)
    pos = labels < 3
    weights = torch.zeros(n, 4)
    weights[pos] = 1.
    return dict(cls_score=torch.randn(n, 4), bbox_pred=torch.randn(n, 12),
                rois=torch.rand(n, 5), labels=labels,
                label_weights=torch.ones(n),
                bbox_targets=torch.randn(n, 4), bbox_weights=weights)


def test_roi_head_loss_is_ce_mean_and_box_mean_over_positives():
    batch = _roi_batch([0, 3, 3, 1, 3])
    head = _bbox_head('SamplingFreeShared2FCBBoxHead')
    losses = head.loss(**batch)
    ce = F.cross_entropy(batch['cls_score'], batch['labels'])
    assert losses['loss_cls'].item() == pytest.approx(ce.item(), rel=1e-6)
    pred = batch['bbox_pred'].view(5, 3, 4)
    l1 = ((pred[0, 0] - batch['bbox_targets'][0]).abs().sum() +
          (pred[3, 1] - batch['bbox_targets'][3]).abs().sum())
    assert losses['loss_bbox'].item() == pytest.approx(
        (l1 / (2 * 4)).item(), rel=1e-6)
    # mmdet's head divides the same sum by all 5 RoIs instead.
    ref = _bbox_head('Shared2FCBBoxHead').loss(**batch)
    assert ref['loss_bbox'].item() == pytest.approx(
        losses['loss_bbox'].item() * 8 / 5, rel=1e-6)
    assert ref['loss_cls'].item() == pytest.approx(
        losses['loss_cls'].item())


@pytest.mark.parametrize('loss', ['GIoULoss', 'IoULoss'])
def test_an_iou_box_loss_is_a_mean_over_positive_boxes(loss):
    """mmdet's IoU losses give one term per box (they average the box
    weights over the coordinates): the mean over the 2 positives, not over
    their 8 coordinates."""
    batch = _roi_batch([0, 3, 3, 1, 3])
    # zero deltas: the decoded boxes are the RoIs; targets are boxes
    # (reg_decoded_bbox)
    boxes = torch.tensor([[0., 0., 4., 4.], [0., 0., 1., 1.],
                          [0., 0., 1., 1.], [2., 0., 6., 3.],
                          [0., 0., 1., 1.]])
    batch.update(rois=torch.cat([torch.zeros(5, 1), boxes], 1),
                 bbox_pred=torch.zeros(5, 12),
                 bbox_targets=boxes + torch.tensor([1., 1., 1., 2.]))
    head = _bbox_head('SamplingFreeShared2FCBBoxHead',
                      loss_bbox=dict(type=loss, loss_weight=1.0),
                      reg_decoded_bbox=True)
    per_box = MODELS.build(dict(type=loss, reduction='none'))(
        boxes[[0, 3]], batch['bbox_targets'][[0, 3]])
    assert (per_box > 0.1).all()
    assert head.loss(**batch)['loss_bbox'].item() == pytest.approx(
        per_box.mean().item(), rel=1e-6)


@pytest.mark.parametrize('config', ['faster_rcnn_roi_sf.py',
                                    'faster_rcnn_sf.py'])
def test_roi_box_loss_is_the_official_smooth_l1(config):
    """GLS sets the RoI classification loss from the box loss's value, so
    the box loss is the official smooth L1 (beta 1): for residuals below 1
    it is |x| / 2 times mmdet's L1, here 0.25 at |x| = 0.5."""
    cfg = repo_config(config)
    loss = MODELS.build(cfg.model.roi_head.bbox_head.loss_bbox)
    pred, target = torch.full((1, 4), 0.5), torch.zeros(1, 4)
    assert loss(pred, target).item() == pytest.approx(0.5**2 / 2)
    assert MODELS.build(dict(type='L1Loss'))(pred, target).item() == 0.5


def test_roi_head_without_positives_gives_zero_box_loss():
    losses = _bbox_head('SamplingFreeShared2FCBBoxHead').loss(
        **_roi_batch([3, 3]))
    assert losses['loss_bbox'].item() == 0
    assert torch.isfinite(losses['loss_cls'])


def test_bbox_head_has_the_plain_state_dict_keys():
    torch.manual_seed(0)
    a = _bbox_head('SamplingFreeShared2FCBBoxHead')
    b = _bbox_head('Shared2FCBBoxHead')
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(3, 2, 1, 1)
    for u, v in zip(a(x), b(x)):
        assert torch.equal(u, v)


def test_faster_rcnn_sf_roi_head_sees_all_proposals(toy_cfg):
    """One loss forward of the toy faster_rcnn_sf: every proposal (plus the
    gts) reaches the RoI head, and GLS guides both heads."""
    from mmengine.runner import Runner

    from mmdet_freebies.engine.hooks import GuidedLossScaling
    cfg = toy_cfg('faster_rcnn_sf.py')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    seen = []
    sample = model.roi_head.bbox_sampler.sample

    def spy(assign_result, pred_instances, gt_instances, **kw):
        n = len(pred_instances) + len(gt_instances)
        res = sample(assign_result, pred_instances, gt_instances, **kw)
        seen.append((n, len(res.pos_inds) + len(res.neg_inds)))
        return res

    model.roi_head.bbox_sampler.sample = spy
    hook = GuidedLossScaling()
    hook.attach(model)
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader)))
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    assert seen and all(n == kept for n, kept in seen)
    assert sum(n for n, _ in seen) > 2 * 64  # far beyond a 64-RoI sample
    assert losses['gls_ratio_rpn'] > 0
    assert losses['loss_bbox'] > 0  # the batch has positive RoIs
    assert losses['loss_cls'].item() == pytest.approx(
        2 * losses['loss_bbox'].item(), rel=1e-5)
