"""Detection error counts of the face-detection training-failure study."""
import warnings
from collections import OrderedDict
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
from mmengine.evaluator import BaseMetric
from pycocotools import mask as mask_utils

from mmdet.evaluation.functional import bbox_overlaps
from mmdet.registry import METRICS

from ...utils.boxes import box_sides
from ...utils.checks import is_real

# COCO's area ranges: small < 32^2 <= medium < 96^2 <= large.
SIZE_NAMES = ('small', 'medium', 'large')
_SIZE_EDGES = np.array([32.0**2, 96.0**2])
MATCHINGS = ('coco', 'voc')
# mmdet's dataset_type of the sets whose ignored boxes are VOC "difficult"
_VOC_TYPES = ('VOC2007', 'VOC2012')


def size_bucket(bboxes: np.ndarray) -> np.ndarray:
    """Index into ``SIZE_NAMES`` of each box (x1, y1, x2, y2) by its area,
    width x height (:func:`box_sides`)."""
    area = box_sides(bboxes).prod(1)
    return np.searchsorted(_SIZE_EDGES, area, side='right')


def _coco_iou(dets: np.ndarray, boxes: np.ndarray,
              crowd: bool = False) -> np.ndarray:
    """pycocotools' IoU of boxes (x1, y1, x2, y2), (dets x boxes), in
    float64 as COCOeval (mmdet's ``bbox_overlaps`` rounds to float32, so an
    IoU of exactly 0.7 would miss a 0.7 threshold); ``crowd``: intersection
    over the detection's area, COCO's IoU with a crowd box."""
    if not len(dets) or not len(boxes):
        return np.zeros((len(dets), len(boxes)))

    def xywh(b):
        return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1)

    return np.asarray(mask_utils.iou(xywh(dets), xywh(boxes),
                                     [int(crowd)] * len(boxes)))


def _same_class_only(overlaps: np.ndarray, pred_labels,
                     labels) -> np.ndarray:
    """``overlaps`` (detections x boxes) with other-class pairs set to -1."""
    same = (np.asarray(pred_labels).reshape(-1, 1) ==
            np.asarray(labels).reshape(1, -1))
    return np.where(same, overlaps, -1.0)


def match_image(pred_bboxes: np.ndarray,
                pred_scores: np.ndarray,
                pred_labels: np.ndarray,
                gt_bboxes: np.ndarray,
                gt_labels: np.ndarray,
                ignore_bboxes: Optional[np.ndarray] = None,
                ignore_labels: Optional[np.ndarray] = None,
                iou_thr: float = 0.5,
                matching: str = 'coco') -> Dict[str, np.ndarray]:
    """Greedy per-class matching of one image's detections.

    Detections are visited by descending score. ``matching='coco'``, as
    COCOeval: each takes the unmatched ground truth of its class with the
    highest IoU (the last of equal ones), if that IoU is at least
    ``iou_thr`` (a true positive). An unmatched detection inside an ignored
    (crowd) box of its class is neither TP nor FP: as COCO's crowd IoU, the
    intersection over the *detection's* area must reach ``iou_thr``
    (``ignore_labels=None``: a crowd box of any class). Any other unmatched
    detection is a false positive.

    ``matching='voc'``, as mmdet's ``VOCMetric`` (``tpfp_default``, legacy
    +1 coordinates, float32 IoU): each takes the ground truth of its class,
    ignored ("difficult") ones included, with the highest IoU (the first of
    equal ones). At ``iou_thr`` or above it is ignored if that box is
    difficult, a true positive if the box is not yet matched and a false
    positive if it is; below, a false positive.

    Unmatched ground truths (not ignored) are false negatives.

    Returns:
        dict: ``tp``, ``fp``, ``fn`` (int arrays) and ``iou_sum`` (the summed
        IoU of true positives), each of shape (3, ) indexed by
        ``SIZE_NAMES``. TP and FN are bucketed by the ground truth's area,
        FP by the detection's area.
    """
    if matching not in MATCHINGS:
        raise ValueError(f'matching must be one of {MATCHINGS}, got '
                         f'{matching!r}')
    out = dict(tp=np.zeros(3, np.int64), fp=np.zeros(3, np.int64),
               fn=np.zeros(3, np.int64), iou_sum=np.zeros(3, np.float64))
    pred_bboxes = np.asarray(pred_bboxes, np.float64).reshape(-1, 4)
    gt_bboxes = np.asarray(gt_bboxes, np.float64).reshape(-1, 4)
    if ignore_bboxes is None:
        ignore_bboxes = np.zeros((0, 4))
    ignore_bboxes = np.asarray(ignore_bboxes, np.float64).reshape(-1, 4)
    pred_size = size_bucket(pred_bboxes)
    gt_size = size_bucket(gt_bboxes)
    match = _match_voc if matching == 'voc' else _match_coco
    gt_matched = np.zeros(len(gt_bboxes), bool)
    for i, j, iou in match(pred_bboxes, pred_scores, pred_labels, gt_bboxes,
                           gt_labels, ignore_bboxes, ignore_labels, iou_thr):
        if j < 0:
            out['fp'][pred_size[i]] += 1
        else:
            gt_matched[j] = True
            out['tp'][gt_size[j]] += 1
            out['iou_sum'][gt_size[j]] += iou
    np.add.at(out['fn'], gt_size[~gt_matched], 1)
    return out


def _match_coco(pred_bboxes, pred_scores, pred_labels, gt_bboxes, gt_labels,
                ignore_bboxes, ignore_labels,
                iou_thr) -> Iterator[Tuple[int, int, float]]:
    """The ``'coco'`` rule of :func:`match_image`: by descending score,
    ``(detection, gt, IoU)`` for a true positive, ``(detection, -1, 0)`` for
    a false positive; an ignored detection yields nothing."""
    # One IoU matrix for all pairs; the class mask keeps matching per class.
    ious = _same_class_only(_coco_iou(pred_bboxes, gt_bboxes), pred_labels,
                            gt_labels)
    ignored = np.zeros(len(pred_bboxes), bool)
    if len(ignore_bboxes) and len(pred_bboxes):
        crowd_iou = _coco_iou(pred_bboxes, ignore_bboxes, crowd=True)
        if ignore_labels is not None:
            crowd_iou = _same_class_only(crowd_iou, pred_labels,
                                         ignore_labels)
        ignored = crowd_iou.max(1) >= iou_thr
    taken = np.zeros(len(gt_bboxes), bool)
    for i in np.argsort(-np.asarray(pred_scores), kind='stable'):
        cand = np.where(taken, -1.0, ious[i]) if len(gt_bboxes) else []
        j = len(cand) - 1 - int(np.argmax(cand[::-1])) if len(cand) else -1
        if j >= 0 and cand[j] >= iou_thr:
            taken[j] = True
            yield i, j, cand[j]
        elif not ignored[i]:
            yield i, -1, 0.0


def _match_voc(pred_bboxes, pred_scores, pred_labels, gt_bboxes, gt_labels,
               ignore_bboxes, ignore_labels,
               iou_thr) -> Iterator[Tuple[int, int, float]]:
    """The ``'voc'`` rule of :func:`match_image`, yielding as
    :func:`_match_coco`."""
    num_gts = len(gt_bboxes)
    ious = bbox_overlaps(pred_bboxes, np.concatenate([gt_bboxes,
                                                      ignore_bboxes]),
                         use_legacy_coordinate=True)
    ious[:, :num_gts] = _same_class_only(ious[:, :num_gts], pred_labels,
                                         gt_labels)
    if ignore_labels is not None:  # None: a difficult box of any class
        ious[:, num_gts:] = _same_class_only(ious[:, num_gts:], pred_labels,
                                             ignore_labels)
    taken = np.zeros(num_gts, bool)
    for i in np.argsort(-np.asarray(pred_scores), kind='stable'):
        j = int(np.argmax(ious[i])) if ious.shape[1] else -1
        if j < 0 or ious[i, j] < iou_thr or (j < num_gts and taken[j]):
            yield i, -1, 0.0
        elif j < num_gts:  # (j >= num_gts: a difficult box, ignored)
            taken[j] = True
            yield i, j, ious[i, j]


@METRICS.register_module()
class DetectionErrorMetric(BaseMetric):
    """TP / FP / FN, precision, recall and mean IoU of matches by box size.

    The error counts of the face-detection training-failure study (SSD on
    WIDER FACE): TP, FP and FN at IoU >= 0.5 and the mean IoU of the
    matches. They name what goes wrong where AP only says that something
    does: a middle-stage failure shows many small false positives
    (``fp_small``) while ``mean_iou`` keeps rising. Use it next to
    ``CocoMetric`` in a list ``val_evaluator``.

    Detections below ``score_thr`` are dropped, then each image is matched
    greedily by score per class (see :func:`match_image`). Ground truths
    are read from ``data_sample['gt_instances']`` (and
    ``ignored_instances``), so the test pipeline must load annotations, as
    mmdet's COCO pipelines do after ``Resize`` (original coordinates).

    Reported keys (prefixed ``det_err/``): ``tp``, ``fp``, ``fn``,
    ``precision``, ``recall``, ``mean_iou`` and the same for each of
    ``small``, ``medium``, ``large`` (e.g. ``fp_small``, the count of false
    positives on small boxes). A ratio with an empty denominator is 0.

    Sizes are COCO's area ranges on width x height of the box: TP and FN by
    the ground truth's box, FP by the detection's. COCOeval bins ground
    truths by the annotation's ``area`` instead, the mask area for COCO
    instances (often below the box's), which mmdet does not load: an
    object counted in ``*_medium`` here can be in CocoMetric's AP_S.

    Args:
        iou_thr (float): IoU for a true positive. Defaults to 0.5.
        score_thr (float): Detections below it are discarded before
            matching. Defaults to 0.3.
        matching (str, optional): ``'coco'`` (ignored boxes are crowds) or
            ``'voc'`` (ignored boxes are "difficult", matched as mmdet's
            ``VOCMetric``), see :func:`match_image`. Defaults to None:
            ``'voc'`` when the dataset's ``dataset_type`` is VOC2007 or
            VOC2012 (as ``VOCMetric`` reads it), otherwise ``'coco'``; with
            a warning (once per metric) when the dataset has another
            ``dataset_type``: mmdet's ``VOCDataset`` sets None when its data
            root names neither year, and its "difficult" boxes would then
            be matched as crowds (COCO sets none and is not warned about).
        collect_device (str): Device used to collect results across ranks,
            'cpu' or 'gpu'. Defaults to 'cpu'.
        prefix (str, optional): Prefix of the metric names. Defaults to
            None, meaning ``default_prefix`` ('det_err').
    """

    default_prefix: Optional[str] = 'det_err'

    def __init__(self,
                 iou_thr: float = 0.5,
                 score_thr: float = 0.3,
                 matching: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not (is_real(iou_thr) and 0.0 < iou_thr <= 1.0):
            raise ValueError(f'iou_thr must be in (0, 1], got {iou_thr!r}')
        if not (is_real(score_thr) and 0.0 <= score_thr <= 1.0):
            raise ValueError(
                f'score_thr must be in [0, 1], got {score_thr!r}')
        if matching is not None and matching not in MATCHINGS:
            raise ValueError(f'matching must be one of {MATCHINGS} or None, '
                             f'got {matching!r}')
        self.iou_thr = iou_thr
        self.score_thr = score_thr
        self.matching = matching
        self._fallback_warned = False

    @property
    def resolved_matching(self) -> str:
        """``matching``, or the one the dataset's type implies."""
        if self.matching is not None:
            return self.matching
        meta = self.dataset_meta or {}
        return 'voc' if meta.get('dataset_type') in _VOC_TYPES else 'coco'

    @BaseMetric.dataset_meta.setter
    def dataset_meta(self, dataset_meta: Optional[dict]) -> None:
        """Set the dataset's meta info; warn now, at the start of the loop,
        if it leaves ``matching`` to the fallback."""
        self._dataset_meta = dataset_meta
        self._warned_matching()

    def _warned_matching(self) -> str:
        """``resolved_matching``, with a warning (once) when it falls back
        for a dataset that names a ``dataset_type`` (VOC without a year):
        its "difficult" boxes would silently count as crowds."""
        matching = self.resolved_matching
        meta = self.dataset_meta or {}
        if self.matching is None and matching == 'coco' \
                and 'dataset_type' in meta and not self._fallback_warned:
            self._fallback_warned = True
            dataset_type = meta['dataset_type']
            warnings.warn(
                'DetectionErrorMetric: matching=None and the dataset_type '
                f'{dataset_type!r} is not one of {_VOC_TYPES}: falling back '
                "to matching='coco' (ignored boxes are COCO crowds). For "
                'VOC "difficult" boxes (e.g. a VOCDataset whose data root '
                "names neither VOC2007 nor VOC2012) set matching='voc' in "
                "the metric's config; set matching='coco' to silence this "
                'warning')
        return matching

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Match each image now; keep only its (3, ) count arrays."""
        matching = self._warned_matching()
        for sample in data_samples:
            # PackDetInputs always adds gt_instances, empty without
            # LoadAnnotations
            if 'bboxes' not in sample.get('gt_instances', {}):
                raise KeyError(
                    "DetectionErrorMetric needs gt_instances['bboxes'] in "
                    'the data samples: add LoadAnnotations(with_bbox=True) '
                    'to the test pipeline, after Resize')
            pred = sample['pred_instances']
            keep = (pred['scores'] >= self.score_thr).cpu().numpy()
            gt = sample['gt_instances']
            ignored = sample.get('ignored_instances', {})
            ignore_bboxes = ignored['bboxes'].cpu().numpy() \
                if 'bboxes' in ignored else None
            ignore_labels = ignored['labels'].cpu().numpy() \
                if 'labels' in ignored else None
            self.results.append(match_image(
                pred['bboxes'].cpu().numpy()[keep],
                pred['scores'].cpu().numpy()[keep],
                pred['labels'].cpu().numpy()[keep],
                gt['bboxes'].cpu().numpy(),
                gt['labels'].cpu().numpy(),
                ignore_bboxes,
                ignore_labels,
                iou_thr=self.iou_thr,
                matching=matching))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Sum the per-image counts and derive the ratios."""
        total = {k: sum(r[k] for r in results) if results else np.zeros(3)
                 for k in ('tp', 'fp', 'fn', 'iou_sum')}
        metrics: Dict[str, float] = OrderedDict()
        groups = [('', slice(None))] + [(f'_{name}', i)
                                        for i, name in enumerate(SIZE_NAMES)]
        for suffix, idx in groups:
            tp, fp, fn, iou_sum = (float(np.sum(total[k][idx]))
                                   for k in ('tp', 'fp', 'fn', 'iou_sum'))
            metrics[f'tp{suffix}'] = int(tp)
            metrics[f'fp{suffix}'] = int(fp)
            metrics[f'fn{suffix}'] = int(fn)
            metrics[f'precision{suffix}'] = tp / (tp + fp) if tp + fp else 0.
            metrics[f'recall{suffix}'] = tp / (tp + fn) if tp + fn else 0.
            metrics[f'mean_iou{suffix}'] = iou_sum / tp if tp else 0.
        return metrics
