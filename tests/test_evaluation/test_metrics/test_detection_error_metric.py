import warnings

import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.structures import InstanceData

from mmdet.registry import METRICS
from mmdet.structures import DetDataSample
from mmdet_freebies.evaluation.metrics.detection_error_metric import (
    DetectionErrorMetric, match_image, size_bucket)


def _sample(pred, gt, ignored=None, ignored_labels=None):
    s = DetDataSample()
    s.pred_instances = InstanceData(
        bboxes=torch.tensor(pred[0], dtype=torch.float32).reshape(-1, 4),
        scores=torch.tensor(pred[1], dtype=torch.float32),
        labels=torch.tensor(pred[2], dtype=torch.long))
    s.gt_instances = InstanceData(
        bboxes=torch.tensor(gt[0], dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(gt[1], dtype=torch.long))
    ignored = ignored or []
    s.ignored_instances = InstanceData(
        bboxes=torch.tensor(ignored, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(ignored_labels or [0] * len(ignored),
                            dtype=torch.long))
    return s.to_dict()


# Image 1, worked by hand (areas: small < 1024 <= medium < 9216 <= large):
#   G1 cls0 [0,0,10,10] small   G2 cls0 [0,0,100,100] large
#   G3 cls1 [50,50,90,90] medium  G4 cls2 [300,300,310,320] small
#   P7 cls1 .95 [50,50,90,70]  -> G3 IoU 800/1600 = .5  TP medium (greedy by
#                                 score takes it before the better P6)
#   P1 cls0 .90 [0,0,10,10]    -> G1 IoU 1             TP small
#   P2 cls0 .80 [0,0,10,5]     -> G1 taken, G2 IoU .005 FP small (area 50)
#   P3 cls0 .70 [0,0,100,80]   -> G2 IoU .8            TP large
#   P4 cls1 .60 [0,0,10,10]    -> G3 IoU 0             FP small
#   P6 cls1 .50 [50,50,90,90]  -> G3 taken             FP medium (1600)
#   P8 cls0 .40 [200,200,240,236] -> crowd IoU .9      ignored
#   P5 cls0 .20 [300,300,310,320] -> below score_thr .3, dropped
#   G4 unmatched (its class-2 twin P5 is dropped)       FN small
# Image 2: one large gt, no detection                   FN large
IMG1 = _sample(
    ([[50, 50, 90, 70], [0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 100, 80],
      [0, 0, 10, 10], [50, 50, 90, 90], [200, 200, 240, 236],
      [300, 300, 310, 320]],
     [.95, .9, .8, .7, .6, .5, .4, .2], [1, 0, 0, 0, 1, 1, 0, 2]),
    ([[0, 0, 10, 10], [0, 0, 100, 100], [50, 50, 90, 90],
      [300, 300, 310, 320]], [0, 0, 1, 2]),
    ignored=[[200, 200, 240, 240]])
IMG2 = _sample(([], [], []), ([[0, 0, 200, 100]], [3]))


def test_hand_worked_example():
    metric = DetectionErrorMetric(iou_thr=0.5, score_thr=0.3)
    metric.process({}, [IMG1, IMG2])
    m = metric.compute_metrics(metric.results)
    assert (m['tp'], m['fp'], m['fn']) == (3, 3, 2)
    assert m['precision'] == pytest.approx(3 / 6)
    assert m['recall'] == pytest.approx(3 / 5)
    assert m['mean_iou'] == pytest.approx((0.5 + 1.0 + 0.8) / 3, abs=1e-6)
    assert (m['tp_small'], m['fp_small'], m['fn_small']) == (1, 2, 1)
    assert (m['tp_medium'], m['fp_medium'], m['fn_medium']) == (1, 1, 0)
    assert (m['tp_large'], m['fp_large'], m['fn_large']) == (1, 0, 1)
    assert m['precision_small'] == pytest.approx(1 / 3)
    assert m['recall_small'] == pytest.approx(1 / 2)
    assert m['recall_large'] == pytest.approx(1 / 2)
    assert m['mean_iou_medium'] == pytest.approx(0.5, abs=1e-6)
    assert m['mean_iou_large'] == pytest.approx(0.8, abs=1e-6)


def test_thresholds_change_the_counts():
    # score_thr 0: P5 now matches G4 (TP small), P8 still ignored.
    metric = DetectionErrorMetric(score_thr=0.0)
    metric.process({}, [IMG1])
    m = metric.compute_metrics(metric.results)
    assert (m['tp'], m['fp'], m['fn']) == (4, 3, 0)
    # iou_thr .6: P7 (IoU .5) misses, so P6 (IoU 1) takes G3.
    metric = DetectionErrorMetric(iou_thr=0.6)
    metric.process({}, [IMG1])
    m = metric.compute_metrics(metric.results)
    assert (m['tp'], m['fp'], m['fn']) == (3, 3, 1)
    assert m['fp_medium'] == 0 and m['fp_small'] == 3


def test_prefix_in_evaluator_and_empty():
    evaluator = Evaluator([METRICS.build(dict(type='DetectionErrorMetric'))])
    evaluator.process([IMG2])
    m = evaluator.evaluate(1)
    assert m['det_err/fn'] == 1 and m['det_err/tp'] == 0
    assert m['det_err/precision'] == 0.0 and m['det_err/mean_iou'] == 0.0


def test_match_image_without_gt_or_pred():
    out = match_image(np.zeros((0, 4)), [], [], np.zeros((0, 4)), [])
    assert out['tp'].sum() == out['fp'].sum() == out['fn'].sum() == 0
    out = match_image([[0, 0, 40, 40]], [0.9], [0], np.zeros((0, 4)), [])
    assert out['fp'].tolist() == [0, 1, 0]


def test_size_bucket_edges():
    # 31.9^2 small, 32^2 medium, 96^2 large, as COCO's area ranges.
    boxes = [[0, 0, 31.9, 31.9], [0, 0, 32, 32], [0, 0, 95, 96],
             [0, 0, 96, 96]]
    assert size_bucket(np.array(boxes)).tolist() == [0, 1, 1, 2]
    # COCO's [12.3, 40.7, 32, 32] as mmdet's float32 corners: 31.999998 px
    # sides, still 32 x 32
    box = np.array([[12.3, 40.7, 12.3 + 32, 40.7 + 32]], np.float32)
    assert (box[0, 2] - box[0, 0]) * (box[0, 3] - box[0, 1]) < 32**2
    assert size_bucket(box).tolist() == [1]


def test_crowd_boxes_ignore_detections_inside_them_as_coco():
    """COCO's crowd IoU is the intersection over the detection's area: a
    small detection inside a large crowd box of its class is ignored (its
    plain IoU is 0.12); one of another class is a false positive."""
    pred = ([[10, 10, 40, 90], [100, 10, 130, 90]], [.9, .8], [1, 2])
    metric = DetectionErrorMetric()
    metric.process({}, [_sample(pred, ([], []), ignored=[[0, 0, 200, 100]],
                                ignored_labels=[1])])
    m = metric.compute_metrics(metric.results)
    assert (m['tp'], m['fp'], m['fn']) == (0, 1, 0)
    # without labels, a crowd box of any class
    out = match_image(*pred, np.zeros((0, 4)), [], [[0, 0, 200, 100]])
    assert out['fp'].sum() == 0


def test_the_thresholds_are_inclusive():
    """A detection scored exactly at score_thr is kept (a TP here); one
    covered by a crowd box exactly at iou_thr (IoF 0.5) is ignored, as
    COCO's >= does."""
    metric = DetectionErrorMetric(score_thr=0.5)
    metric.process({}, [_sample(([[0, 0, 10, 10]], [.5], [0]),
                                ([[0, 0, 10, 10]], [0]))])
    assert metric.compute_metrics(metric.results)['tp'] == 1
    out = match_image(np.array([[0, 0, 10, 10.]]), np.array([.9]),
                      np.array([0]), np.zeros((0, 4)), np.zeros(0, int),
                      np.array([[5, 0, 15, 10.]]), np.array([0]),
                      iou_thr=0.5)
    assert out['fp'].sum() == 0


@pytest.mark.parametrize('thr', [0.6, 0.7, 0.8, 0.9])
def test_an_iou_exactly_at_the_threshold_matches(thr):
    """IoU thr = (100 thr) / 100 exactly: a TP at iou_thr=thr, as in
    COCOeval's float64 (float32 IoUs miss 0.7 and 0.9); the same for a
    detection covered by a crowd box at IoF thr."""
    det = np.array([[0, 0, 100 * thr, 10]])
    out = match_image(det, [.9], [0], np.array([[0, 0, 100, 10.]]), [0],
                      iou_thr=thr)
    assert (out['tp'].sum(), out['fp'].sum(), out['fn'].sum()) == (1, 0, 0)
    out = match_image(np.array([[0, 0, 100, 10.]]), [.9], [0],
                      np.zeros((0, 4)), [],
                      np.array([[100 * (1 - thr), 0, 200, 10]]), [0],
                      iou_thr=thr)
    assert out['fp'].sum() == 0


def test_equal_ious_go_to_the_last_gt_as_in_cocoeval():
    """The first detection overlaps both gts by 2/3; COCOeval gives it the
    last, which leaves the first to the second detection (IoU 0.8): 2 TPs.
    The first gt would leave the second detection unmatched."""
    out = match_image(np.array([[2, 0, 12, 10], [0, 0, 8, 10.]]), [.9, .8],
                      [0, 0], np.array([[0, 0, 10, 10], [4, 0, 14, 10.]]),
                      [0, 0])
    assert (out['tp'].sum(), out['fp'].sum(), out['fn'].sum()) == (2, 0, 0)


def _coco_counts(images, iou_thr):
    """TP, FP and FN of pycocotools' COCOeval at one IoU threshold, all
    areas, no detection limit, from its per-image matches."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    gt = COCO()
    anns, dets = [], []
    for i, (pred, boxes, labels, crowd) in enumerate(images):
        for box, label, c in zip(boxes, labels, crowd):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append(dict(id=len(anns) + 1, image_id=i, category_id=label,
                             bbox=[box[0], box[1], w, h], area=w * h,
                             iscrowd=int(c)))
        for box, score, label in zip(*pred):
            dets.append(dict(image_id=i, category_id=label, score=score,
                             bbox=[box[0], box[1], box[2] - box[0],
                                   box[3] - box[1]]))
    gt.dataset = dict(images=[dict(id=i) for i in range(len(images))],
                      annotations=anns,
                      categories=[dict(id=c) for c in range(3)])
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(dets), 'bbox')
    ev.params.iouThrs = np.array([iou_thr])
    ev.params.maxDets = [10000]
    ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ['all']
    ev.evaluate()
    tp = fp = fn = 0
    for e in filter(None, ev.evalImgs):
        matched, ignored = e['dtMatches'][0] > 0, e['dtIgnore'][0] > 0
        tp += int((matched & ~ignored).sum())
        fp += int((~matched & ~ignored).sum())
        fn += int(((e['gtMatches'][0] == 0) & ~e['gtIgnore'].astype(bool))
                  .sum())
    return tp, fp, fn


@pytest.mark.parametrize('iou_thr', [0.5, 0.7])
def test_counts_equal_cocoevals_on_random_images(iou_thr):
    """30 images of random boxes on a coarse grid (so equal IoUs occur), 3
    classes, some crowd gts: TP, FP and FN equal pycocotools'."""
    rng = np.random.RandomState(0)
    images, metric = [], DetectionErrorMetric(iou_thr=iou_thr, score_thr=0)

    def boxes(n):
        xy = rng.randint(0, 8, (n, 2)) * 4.0
        return np.concatenate([xy, xy + rng.randint(2, 6, (n, 2)) * 4], 1)

    for _ in range(30):
        num_gts = rng.randint(0, 6)
        gt_boxes, gt_labels = boxes(num_gts), rng.randint(0, 3, num_gts)
        crowd = rng.rand(num_gts) < 0.15
        # near copies of the gts (some of another class), and strays
        near = np.repeat(np.arange(num_gts), 2)
        near = near[rng.rand(len(near)) < 0.6]
        det_boxes = np.concatenate([
            gt_boxes[near] + rng.randint(-1, 2, (len(near), 4)) * 4 *
            (rng.rand(len(near), 4) < 0.3),
            boxes(rng.randint(0, 4))])
        det_labels = np.concatenate([
            np.where(rng.rand(len(near)) < 0.8, gt_labels[near],
                     rng.randint(0, 3, len(near))),
            rng.randint(0, 3, len(det_boxes) - len(near))])
        pred = (det_boxes, np.round(rng.rand(len(det_boxes)), 1),
                det_labels)
        images.append((pred, gt_boxes, gt_labels, crowd))
        metric.process({}, [_sample(
            tuple(x.tolist() for x in pred),
            (gt_boxes[~crowd].tolist(), gt_labels[~crowd].tolist()),
            ignored=gt_boxes[crowd].tolist(),
            ignored_labels=gt_labels[crowd].tolist())])
    m = metric.compute_metrics(metric.results)
    tp, fp, fn = _coco_counts(images, iou_thr)
    assert tp > 10 and fp > 10 and fn > 5
    assert (m['tp'], m['fp'], m['fn']) == (tp, fp, fn)


def test_voc_matching_differs_from_cocos_where_voc_says():
    """VOC (mmdet's tpfp_default) takes the best-IoU box, difficult ones
    included, and does not fall back to the next gt; COCO does.
    P1 .9 [0,0,10,10]: G1 IoU 1, TP either way.
    P2 .8 [0,0,10,12]: best is the taken G1 (IoU 0.85 legacy), G2 [0,2,10,12]
      IoU 0.60: VOC FP, COCO TP on G2.
    P3 .7 [20,0,30,10]: best is the difficult D1 [20,0,30,10], G3
      [20,0,30,11] IoU 0.92: VOC ignored (G3 left an FN), COCO TP on G3."""
    pred = (np.array([[0, 0, 10, 10], [0, 0, 10, 12], [20, 0, 30, 10.]]),
            [.9, .8, .7], [0, 0, 0])
    gt = (np.array([[0, 0, 10, 10], [0, 2, 10, 12], [20, 0, 30, 11.]]),
          [0, 0, 0])
    difficult = (np.array([[20, 0, 30, 10.]]), np.array([0]))
    voc = match_image(*pred, *gt, *difficult, matching='voc')
    assert (voc['tp'].sum(), voc['fp'].sum(), voc['fn'].sum()) == (1, 1, 2)
    coco = match_image(*pred, *gt, *difficult)
    assert (coco['tp'].sum(), coco['fp'].sum(), coco['fn'].sum()) == (3, 0, 0)
    # a difficult box of another class is no match for the detection
    other = match_image(*pred, *gt, difficult[0], np.array([1]),
                        matching='voc')
    assert (other['tp'].sum(), other['fp'].sum()) == (2, 1)


@pytest.mark.parametrize('iou_thr', [0.5, 0.7])
def test_voc_counts_equal_mmdets_tpfp_default(iou_thr):
    """30 random images, 3 classes, some difficult gts: per class, TP and
    FP equal mmdet's VOC matching (tpfp_default with legacy coordinates, as
    VOCMetric calls it); FN are the non-difficult gts it leaves uncovered."""
    from mmdet.evaluation.functional.mean_ap import tpfp_default
    rng = np.random.RandomState(1)
    metric = DetectionErrorMetric(iou_thr=iou_thr, score_thr=0)
    metric.dataset_meta = dict(classes=('a', 'b', 'c'),
                               dataset_type='VOC2007')
    assert metric.resolved_matching == 'voc'
    tp = fp = fn = 0
    for _ in range(30):
        num_gts = rng.randint(0, 6)
        xy = rng.randint(0, 8, (num_gts, 2)) * 8.0
        gt_boxes = np.concatenate(
            [xy, xy + rng.randint(3, 8, (num_gts, 2)) * 8], 1)
        gt_labels = rng.randint(0, 3, num_gts)
        hard = rng.rand(num_gts) < 0.2
        near = np.repeat(np.arange(num_gts), 2)
        near = near[rng.rand(len(near)) < 0.7]
        det_boxes = gt_boxes[near] + rng.randint(-2, 3, (len(near), 4)) * 2.0
        det_labels = np.where(rng.rand(len(near)) < 0.8, gt_labels[near],
                              rng.randint(0, 3, len(near)))
        # distinct scores: mmdet's argsort is not stable
        scores = rng.permutation(len(near)) / max(len(near), 1) + 0.01
        metric.process({}, [_sample(
            (det_boxes.tolist(), scores.tolist(), det_labels.tolist()),
            (gt_boxes[~hard].tolist(), gt_labels[~hard].tolist()),
            ignored=gt_boxes[hard].tolist(),
            ignored_labels=gt_labels[hard].tolist())])
        dets = np.concatenate([det_boxes, scores[:, None]], 1)
        fn += int((~hard).sum())
        for c in range(3):
            t, f = tpfp_default(dets[det_labels == c],
                                gt_boxes[~hard & (gt_labels == c)],
                                gt_boxes[hard & (gt_labels == c)],
                                iou_thr, use_legacy_coordinate=True)
            tp, fp, fn = tp + int(t.sum()), fp + int(f.sum()), fn - int(
                t.sum())
    m = metric.compute_metrics(metric.results)
    assert tp > 10 and fp > 5 and fn > 5
    assert (m['tp'], m['fp'], m['fn']) == (tp, fp, fn)


def test_matching_follows_the_dataset_type_unless_given():
    metric = DetectionErrorMetric()
    assert metric.resolved_matching == 'coco'  # no dataset_meta yet
    metric.dataset_meta = dict(classes=('a', ), dataset_type='VOC2012')
    assert metric.resolved_matching == 'voc'
    with pytest.warns(UserWarning, match='falling back'):  # see below
        metric.dataset_meta = dict(classes=('a', ), dataset_type=None)
    assert metric.resolved_matching == 'coco'
    metric = DetectionErrorMetric(matching='coco')
    metric.dataset_meta = dict(classes=('a', ), dataset_type='VOC2007')
    assert metric.resolved_matching == 'coco'
    with pytest.raises(ValueError, match="matching .* got 'pascal'"):
        DetectionErrorMetric(matching='pascal')
    with pytest.raises(ValueError, match="matching .* got 'iou'"):
        match_image([[0, 0, 4, 4]], [1.], [0], [[0, 0, 4, 4]], [0],
                    matching='iou')


def test_the_coco_fallback_warns_once_and_a_given_matching_not():
    """mmdet's VOCDataset sets dataset_type=None when its data root names
    neither VOC2007 nor VOC2012: its "difficult" boxes would silently be
    matched as COCO crowds. COCO, which sets no dataset_type, is not
    warned about."""
    metric = DetectionErrorMetric()
    with pytest.warns(UserWarning, match="dataset_type None is not one of "
                      r"\('VOC2007', 'VOC2012'\): falling back to "
                      "matching='coco' .* set matching='voc'"):
        metric.dataset_meta = dict(classes=('a', ), dataset_type=None)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        metric.process({}, [IMG1])  # once per metric
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for matching, meta in (('coco', dict(dataset_type=None)),
                               ('voc', {}), (None, dict(
                                   dataset_type='VOC2007')), (None, {})):
            metric = DetectionErrorMetric(matching=matching)
            metric.dataset_meta = dict(meta, classes=('a', ))
            metric.process({}, [IMG1])
        DetectionErrorMetric().process({}, [IMG1])  # no dataset_meta


def test_missing_gt_and_bad_args():
    sample = dict(IMG1)
    sample.pop('gt_instances')
    with pytest.raises(KeyError, match='LoadAnnotations'):
        DetectionErrorMetric().process({}, [sample])
    # what PackDetInputs gives without LoadAnnotations: empty gt_instances
    sample = DetDataSample()
    sample.pred_instances = InstanceData(
        bboxes=torch.zeros(0, 4), scores=torch.zeros(0),
        labels=torch.zeros(0, dtype=torch.long))
    sample.gt_instances = InstanceData()
    with pytest.raises(KeyError, match='LoadAnnotations'):
        DetectionErrorMetric().process({}, [sample.to_dict()])
    with pytest.raises(ValueError, match='iou_thr'):
        DetectionErrorMetric(iou_thr=0)
    with pytest.raises(ValueError, match='score_thr'):
        DetectionErrorMetric(score_thr=1.5)
    for value in ('0.5', True):  # True would be read as an IoU of 1
        with pytest.raises(ValueError, match=f'iou_thr .* got {value!r}'):
            DetectionErrorMetric(iou_thr=value)
