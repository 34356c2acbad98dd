"""estimate_prior: hand counts on known anchors, agreement with the heads'
own target code on real feature maps, stability and per-class priors."""
import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from torch import nn

from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmdet.models.dense_heads import RetinaHead
from mmdet.models.task_modules import AssignResult
from mmdet.registry import DATASETS, MODELS, TASK_UTILS
from mmdet.structures import DetDataSample
from mmdet_freebies.models.task_modules.prior_estimator import (
    PriorEstimate, _count_yolov3, _paa_candidates, estimate_prior,
    featmap_sizes_of, prior_to_bias, sample_indices)

from helpers import json_per_rank, repo_config

CONFIGS = [
    'retinanet_fl.py', 'atss_fl.py', 'paa_fl.py', 'fcos_fl.py',
    'faster_rcnn_biased.py', 'yolov3_baseline.py'
]


def _sample(h, w, boxes, labels):
    sample = DetDataSample(metainfo=dict(
        img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor(
        boxes, dtype=torch.float32).reshape(-1, 4),
                                       labels=torch.tensor(labels,
                                                           dtype=torch.long))
    return dict(inputs=torch.zeros(3, h, w, dtype=torch.uint8),
                data_samples=sample)


def _retina(allowed_border):
    """One level of stride 16 with one 16x16 anchor per cell; anchor (i, j)
    is [16j - 8, 16i - 8, 16j + 8, 16i + 8] (center offset 0)."""
    det = nn.Module()
    det.data_preprocessor = DetDataPreprocessor(pad_size_divisor=16)
    det.bbox_head = RetinaHead(num_classes=2,
                               in_channels=4,
                               stacked_convs=0,
                               feat_channels=4,
                               anchor_generator=dict(type='AnchorGenerator',
                                                     octave_base_scale=1,
                                                     scales_per_octave=1,
                                                     ratios=[1.0],
                                                     strides=[16]),
                               train_cfg=dict(
                                   assigner=dict(type='MaxIoUAssigner',
                                                 pos_iou_thr=0.5,
                                                 neg_iou_thr=0.4,
                                                 min_pos_iou=0,
                                                 ignore_iof_thr=-1),
                                   sampler=dict(type='PseudoSampler'),
                                   allowed_border=allowed_border,
                                   pos_weight=-1,
                                   debug=False))
    return det


# 64x64 image, 4x4 anchors. Box A = anchor (1, 1): IoU 1, no other overlap.
# Box B = [24, 40, 54, 56] (30x16): anchor (3, 2) [24, 40, 40, 56] has IoU
# 256 / 480 = 0.53 (positive), anchor (3, 3) [40, 40, 56, 56] has IoU
# 224 / 512 = 0.44 (ignored, between 0.4 and 0.5); all others 0.
BIG = _sample(64, 64, [[8, 8, 24, 24], [24, 40, 54, 56]], [0, 1])
# 32x32 image batched with BIG: padded to 64x64, but its valid flags only
# cover its own 32x32 pad shape: anchors (0..1, 0..1); box = anchor (1, 1).
SMALL = _sample(32, 32, [[8, 8, 24, 24]], [1])


@pytest.mark.parametrize(
    'data,allowed_border,fg,valid,per_class',
    [
        # 2 positives; 16 anchors - 1 ignored
        ([BIG], -1, 2, 15, [1, 1]),
        # allowed_border=0 keeps anchors fully inside (x2 < 64): j, i in 1..3,
        # 9 anchors - 1 ignored
        ([BIG], 0, 2, 8, [1, 1]),
        # + SMALL: its 4 valid anchors, 1 positive (class 1)
        ([BIG, SMALL], -1, 3, 19, [1, 2]),
        # + SMALL with allowed_border=0: only anchor (1, 1) is inside 32x32
        ([BIG, SMALL], 0, 3, 9, [1, 2]),
    ])
def test_hand_count(data, allowed_border, fg, valid, per_class):
    est = estimate_prior(_retina(allowed_border), data, None, batch_size=2)
    assert (est.num_fg, est.num_valid) == (fg, valid)
    assert est.fg_per_class == per_class
    assert est.prior == pytest.approx(fg / (valid * 2))
    assert est.per_class_prior == pytest.approx([n / valid for n in per_class])
    assert est.num_images == len(data)
    assert est.num_gt_per_class == ([1, 1] if len(data) == 1 else [1, 2])


def test_border_is_the_image_not_its_padding():
    """A 56x56 image padded to 64x64: allowed_border=0 keeps the anchors
    with x2, y2 < 56, as mmdet's targets do (from img_shape), i.e. (i, j)
    in {1, 2}^2; the box is anchor (1, 1)."""
    est = estimate_prior(_retina(0), [_sample(56, 56, [[8, 8, 24, 24]],
                                              [0])], None)
    assert (est.num_fg, est.num_valid) == (1, 4)


def test_ignored_boxes_are_not_counted():
    det = _retina(-1)
    det.bbox_head.assigner = TASK_UTILS.build(
        dict(type='MaxIoUAssigner',
             pos_iou_thr=0.5,
             neg_iou_thr=0.4,
             min_pos_iou=0,
             ignore_iof_thr=0.5))
    data = _sample(64, 64, [[8, 8, 24, 24]], [0])
    # an ignored box over anchors (2..3, 2..3): their IoF is 1 -> ignored
    data['data_samples'].ignored_instances = InstanceData(
        bboxes=torch.tensor([[24., 24., 56., 56.]]), labels=torch.tensor([0]))
    est = estimate_prior(det, [data], None)
    assert (est.num_fg, est.num_valid) == (1, 12)


def test_prior_to_bias():
    assert prior_to_bias(0.01) == pytest.approx(-math.log(99))
    assert prior_to_bias(0.5) == 0.0
    for bad in (0.0, 1.0, -0.1, 2):
        with pytest.raises(ValueError, match='prior'):
            prior_to_bias(bad)


def test_bad_arguments():
    with pytest.raises(ValueError, match='num_images'):
        estimate_prior(_retina(-1), [BIG], 0)
    # a bool is an int to Python, not a count
    with pytest.raises(ValueError, match='num_images must be a positive int '
                       'or None, got True'):
        estimate_prior(_retina(-1), [BIG], True)
    with pytest.raises(ValueError, match='batch_size must be a positive int, '
                       'got True'):
        estimate_prior(_retina(-1), [BIG], 1, batch_size=True)
    det = nn.Module()
    det.bbox_head = nn.Conv2d(1, 1, 1)
    with pytest.raises(ValueError, match="'Conv2d'"):
        estimate_prior(det, [BIG], 1)


@pytest.fixture(scope='module')
def build(toy_data_root):
    """``build(name) -> (model, dataset)`` on the toy data, cached per
    module: building is the slow part of these tests."""
    from mmdet_freebies.utils.toy import apply_toy
    cache = {}

    def get(name):
        if name not in cache:
            init_default_scope('mmdet')
            cfg = apply_toy(repo_config(name), 'tiny', toy_data_root)
            torch.manual_seed(0)
            cache[name] = (MODELS.build(cfg.model),
                           DATASETS.build(cfg.train_dataloader.dataset))
        return cache[name]

    return get


def _reference_counts(model, batch):
    """Counts ``(fg, valid, fg per class)`` from the head's own loss-side
    target code on real feature maps of a network forward (the reference
    the estimator must match)."""
    from mmdet.models.dense_heads import FCOSHead, YOLOV3Head
    from mmdet.models.utils import unpack_gt_instances
    data = model.data_preprocessor(pseudo_collate(batch), True)
    gts, ignores, metas = unpack_gt_instances(data['data_samples'])
    head = getattr(model, 'rpn_head', None) or model.bbox_head
    if head is getattr(model, 'rpn_head', None):
        for gt in gts:
            gt.labels = torch.zeros_like(gt.labels)
        head.sampler = TASK_UTILS.build(dict(type='PseudoSampler'))
    feats = head(model.extract_feat(data['inputs']))[0]
    sizes = [f.shape[-2:] for f in feats]
    assert sizes == [
        torch.Size(s) for s in featmap_sizes_of(head, data['inputs'].shape)
    ]
    if isinstance(head, YOLOV3Head):
        anchors = head.prior_generator.grid_priors(sizes, device='cpu')
        flags = [head.responsible_flags(sizes, g.bboxes, 'cpu') for g in gts]
        targets, negs = head.get_targets([anchors] * len(gts), flags, gts)
        pos = sum(float(t[..., 4].sum()) for t in targets)
        per_class = sum(t[..., 5:].reshape(-1, head.num_classes).sum(0)
                        for t in targets)
        return (pos, pos + sum(float(n.sum()) for n in negs),
                per_class.tolist())
    if isinstance(head, FCOSHead):
        points = head.prior_generator.grid_priors(sizes, device='cpu')
        labels = torch.cat(head.get_targets(points, gts)[0])
        fg = labels < head.num_classes
        return (float(fg.sum()), labels.numel(),
                torch.bincount(labels[fg], minlength=head.num_classes).tolist())
    anchors, valids = head.get_anchors(sizes, metas, 'cpu')
    out = head.get_targets(anchors, valids, gts, metas, ignores)
    labels, weights = (out[1], out[2]) if len(out) > 5 else (out[0], out[1])
    labels = torch.cat([lvl.flatten() for lvl in labels])
    weights = torch.cat([lvl.flatten() for lvl in weights])
    fg = (labels < head.num_classes) & (weights > 0)
    num_classes = 1 if head is getattr(model, 'rpn_head', None) else \
        head.num_classes
    return (float(fg.sum()), float((weights > 0).sum()),
            torch.bincount(labels[fg], minlength=num_classes).tolist())


@pytest.mark.parametrize('name', [c for c in CONFIGS if c != 'paa_fl.py'])
def test_matches_the_heads_target_code(build, name):
    """Feature-map sizes from strides and counts equal those of a forward
    and the head's get_targets, for a batch of two images; ceil(H / stride)
    also holds for an input not divisible by the strides."""
    model, dataset = build(name)
    np.random.seed(0)
    batch = [dataset[0], dataset[1]]
    ref_fg, ref_valid, ref_per_class = _reference_counts(
        model, copy.deepcopy(batch))
    est = estimate_prior(model, batch, None, batch_size=2)
    assert ref_fg > 0
    assert (est.num_fg, est.num_valid) == (ref_fg, ref_valid)
    # each positive in its own class (a class-order slip keeps the totals)
    assert est.fg_per_class == ref_per_class
    assert sum(x > 0 for x in ref_per_class) >= min(2, len(ref_per_class))

    head = getattr(model, 'rpn_head', None) or model.bbox_head
    # YOLOv3's neck concatenates upsampled maps: it needs multiples of 32
    x = torch.zeros(1, 3, *((96, 160) if 'yolo' in name else (100, 76)))
    feats = head(model.extract_feat(x))[0]
    assert [tuple(f.shape[-2:])
            for f in feats] == featmap_sizes_of(head, x.shape)


def test_sampling_free_paa_counts_the_candidates_of_paa(build):
    """paa_ce_sf's head only rescores PAA's candidates: the same counts."""
    counts = []
    for name in ('paa_fl.py', 'paa_ce_sf.py'):
        model, dataset = build(name)
        np.random.seed(0)
        est = estimate_prior(model, dataset, 4)
        counts.append((est.num_fg, est.num_valid, est.fg_per_class))
    assert type(model.bbox_head).__name__ == 'SamplingFreePAAHead'
    assert counts[0] == counts[1] and counts[0][0] > 0


def test_paa_candidates_bound_the_initial_positives(build):
    model, dataset = build('paa_fl.py')
    np.random.seed(0)
    paa = estimate_prior(model, dataset, 4)
    # the same anchors through the initial MaxIoU(0.1) assignment only
    paa_type = type(model.bbox_head)
    model.bbox_head.__class__ = paa_type.__bases__[0]
    np.random.seed(0)
    try:
        initial = estimate_prior(model, dataset, 4)
    finally:
        model.bbox_head.__class__ = paa_type
    assert paa.num_valid == initial.num_valid
    assert 0 < paa.num_fg < initial.num_fg
    # at most topk per gt and level
    head = model.bbox_head
    num_gt = sum(paa.num_gt_per_class)
    assert paa.num_fg <= num_gt * head.topk * head.prior_generator.num_levels


def test_paa_candidates_by_hand():
    """topk=2, two levels of 5 and 3 anchors. gt 1: IoUs .9, .5, .7 on level
    0 (top 2: .9 and .7) and .6 on level 1, 3 candidates, kept; gt 2: one
    candidate, fewer than 2, dropped."""
    gt_inds = torch.tensor([1, 1, 1, 2, 0, 1, 0, 0])
    result = AssignResult(2, gt_inds,
                          torch.tensor([.9, .5, .7, .8, .1, .6, .2, .3]),
                          None)
    keep = _paa_candidates(SimpleNamespace(topk=2), result,
                           [torch.ones(5, dtype=torch.bool),
                            torch.ones(3, dtype=torch.bool)], gt_inds > 0)
    assert keep.tolist() == [True, False, True, False, False, True, False,
                             False]
    # exactly 2 candidates are enough (mmdet skips gts with fewer than 2)
    gt_inds = torch.tensor([1, 1, 0])
    keep = _paa_candidates(SimpleNamespace(topk=2),
                           AssignResult(1, gt_inds,
                                        torch.tensor([.9, .5, .1]), None),
                           [torch.ones(3, dtype=torch.bool)], gt_inds > 0)
    assert keep.tolist() == [True, True, False]


class _Shapes(torch.utils.data.Dataset):
    """Blank images of the given (h, w), one box each, with the
    ``get_data_info`` that ``AspectRatioBatchSampler`` reads."""

    def __init__(self, shapes):
        self.shapes = shapes

    def __len__(self):
        return len(self.shapes)

    def get_data_info(self, i):
        h, w = self.shapes[i]
        return dict(height=h, width=w)

    def __getitem__(self, i):
        h, w = self.shapes[i]
        return _sample(h, w, [[4, 4, 28, 28]], [0])


@pytest.mark.parametrize('name', ['fcos_fl.py', 'yolov3_baseline.py'])
def test_aspect_ratio_groups_batch_as_training(build, name):
    """FCOS and YOLOv3 count every point of the batch padding as a negative:
    a portrait and a landscape image batched together pad to a square.
    With ``aspect_ratio_groups`` the batches are mmdet's
    AspectRatioBatchSampler's, portrait with portrait, and the counts are
    those of the two orientations counted apart."""
    model, _ = build(name)
    portrait, landscape = (96, 64), (64, 96)
    mixed = _Shapes([portrait, landscape] * 2)
    # seed 0 orders them 0, 1, 3, 2: both plain batches mix P and L
    assert sample_indices(4, None, 0) == [0, 1, 3, 2]
    counts = {
        groups: estimate_prior(model, mixed, None, batch_size=2,
                               aspect_ratio_groups=groups)
        for groups in (False, True)
    }
    apart = [estimate_prior(model, _Shapes([s] * 2), None, batch_size=2)
             for s in (portrait, landscape)]
    square = estimate_prior(model, _Shapes([(96, 96)] * 4), None,
                            batch_size=2)
    grouped = counts[True]
    assert grouped.num_valid == sum(e.num_valid for e in apart)
    assert grouped.num_fg == sum(e.num_fg for e in apart)
    assert counts[False].num_valid > grouped.num_valid
    assert counts[False].num_valid == square.num_valid


def test_yolov3_priors(build):
    model, dataset = build('yolov3_baseline.py')
    est = estimate_prior(model, dataset, None)
    assert est.num_cls_valid == est.num_fg > 0
    assert est.objectness_prior == pytest.approx(est.num_fg / est.num_valid)
    # one-hot class targets over positives: priors sum to 1, mean 1 / C
    assert sum(est.per_class_prior) == pytest.approx(1.0)
    assert est.prior == pytest.approx(1 / est.num_classes)


def test_yolov3_priors_with_mixup_weights_and_random_shapes(build):
    """yolov3_mixup: the weighted head appends each positive's mixup weight
    after the classes, and the random shapes (BatchSyncRandomResize) need
    a training run's iteration count and synchronise ranks: neither may
    reach the count (both failed before a run had started)."""
    from mmengine.logging import MessageHub
    MessageHub.get_instance('prior_before_any_run')  # current, no 'iter'
    model, dataset = build('yolov3_mixup.py')
    assert model.data_preprocessor.batch_augments is not None
    est = estimate_prior(model, dataset, None)
    assert len(est.per_class_prior) == est.num_classes
    assert sum(est.per_class_prior) == pytest.approx(1.0)


def test_yolov3_anchor_in_both_masks_is_one_valid_anchor(build, monkeypatch):
    """YOLOv3's loss clamps pos + neg to 1 (loss_by_feat_single), so an
    anchor that is positive and negative counts once: 2 positives and 3
    negatives of which 2 are the positives give 3 valid anchors, not 5."""
    head = build('yolov3_baseline.py')[0].bbox_head
    num_attrib = 5 + head.num_classes
    target = torch.zeros(1, 5, num_attrib)
    target[0, :2, 4] = 1  # objectness of anchors 0 and 1
    target[0, :2, 5] = 1  # class 0
    neg = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.uint8)
    monkeypatch.setattr(head, 'responsible_flags', lambda *a: None)
    monkeypatch.setattr(head, 'get_targets', lambda *a: ([target], [neg]))
    gt = InstanceData(bboxes=torch.zeros(1, 4), labels=torch.zeros(1).long())
    counts = _count_yolov3(head, [gt], None, None, [(1, 1)] * 3, 'cpu')
    assert counts[:4].tolist() == [2, 3, 2, 2]  # fg, valid, cls valid, cls 0


def test_rpn_is_class_agnostic(build):
    model, dataset = build('faster_rcnn_biased.py')
    est = estimate_prior(model, dataset, None)
    assert est.head_type == 'RPNHead' and est.num_classes == 1
    assert est.fg_per_class == [est.num_fg]
    assert len(est.num_gt_per_class) == 4 and sum(est.num_gt_per_class) > 0


@pytest.mark.parametrize('num_classes', [2, 10])
def test_head_classes_must_be_the_dataset_s(build, toy_cfg, num_classes):
    """A head of 10 classes on the 4-class toy set would divide the prior
    by 10, one of 2 would crash on label 2: both are refused before the
    count, naming both numbers."""
    cfg = toy_cfg('retinanet_fl.py')
    cfg.model.bbox_head.num_classes = num_classes
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    _, dataset = build('retinanet_fl.py')
    with pytest.raises(ValueError, match=f'RetinaHead has num_classes='
                       f'{num_classes} but the dataset has 4 classes '
                       "\\(metainfo\\['classes'\\]\\); set the head's "
                       'num_classes to 4'):
        estimate_prior(model, dataset, 2)


def test_per_class_and_sample(build):
    model, dataset = build('retinanet_fl.py')
    np.random.seed(0)
    est = estimate_prior(model, dataset, None)
    assert isinstance(est, PriorEstimate)
    assert est.num_images == len(dataset) == 8
    assert sum(est.fg_per_class) == est.num_fg
    assert np.mean(est.per_class_prior) == pytest.approx(est.prior)
    assert est.prior == pytest.approx(est.num_fg / (est.num_valid * 4))
    # classes with more boxes have more positives
    order = np.argsort(est.num_gt_per_class)
    assert est.fg_per_class[order[-1]] > est.fg_per_class[order[0]]
    assert est.to_dict()['fg_ratio'] == pytest.approx(est.fg_ratio)
    # the same seed draws the same images, another seed others; None and
    # more images than the dataset take all of them
    assert sample_indices(8, 4, 0) == sample_indices(8, 4, 0)
    assert sample_indices(8, 4, 0) != sample_indices(8, 4, 1)
    assert sorted(sample_indices(8, 100, 0)) == list(range(8))
    assert sorted(sample_indices(8, None, 3)) == list(range(8))
    np.random.seed(0)  # the pipeline's random flip
    half = estimate_prior(model, dataset, 4, seed=1)
    np.random.seed(0)
    assert estimate_prior(model, dataset, 4, seed=1).num_fg == half.num_fg
    assert half.num_images == 4


def test_estimate_stabilises_with_more_images(build):
    """The spread of pi over sample seeds shrinks with num_images (the
    full 8-image set varies only with the random flip)."""
    model, dataset = build('retinanet_fl.py')
    np.random.seed(0)
    spread = {}
    for n in (1, 8):
        priors = [
            estimate_prior(model, dataset, n, seed=s).prior for s in range(4)
        ]
        spread[n] = np.std(priors) / np.mean(priors)
    assert spread[8] < spread[1] / 2


# One rank of the test below: an RPN (class-agnostic, 1 class) over two
# images without dataset metainfo, labels 0 and 3, one image per rank.
_RANK_WITH_OWN_LABELS = """
import json, sys, torch, torch.distributed as dist
from mmengine.structures import InstanceData
from torch import nn
from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmdet.models.dense_heads import RPNHead
from mmdet.structures import DetDataSample
from mmdet_freebies.models.task_modules.prior_estimator import estimate_prior

def image(label):
    sample = DetDataSample(metainfo=dict(
        img_shape=(64, 64), ori_shape=(64, 64), scale_factor=(1., 1.)))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[8., 8., 24., 24.]]), labels=torch.tensor([label]))
    return dict(inputs=torch.zeros(3, 64, 64, dtype=torch.uint8),
                data_samples=sample)

dist.init_process_group('gloo')
det = nn.Module()
det.data_preprocessor = DetDataPreprocessor(pad_size_divisor=16)
det.bbox_head = RPNHead(
    in_channels=4, feat_channels=4,
    anchor_generator=dict(type='AnchorGenerator', octave_base_scale=1,
                          scales_per_octave=1, ratios=[1.0], strides=[16]),
    train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5,
                                 neg_iou_thr=0.4, min_pos_iou=0,
                                 ignore_iof_thr=-1),
                   sampler=dict(type='PseudoSampler'), allowed_border=-1,
                   pos_weight=-1, debug=False))
est = estimate_prior(det, [image(0), image(3)], None, batch_size=1)
json.dump(est.num_gt_per_class, open(sys.argv[1] + str(dist.get_rank()), 'w'))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ranks_agree_on_the_classes_they_saw(tmp_path):
    """Without dataset metainfo the per-class gt counts grow to the largest
    label seen, which differs between ranks (1 vs 4 classes here); the
    lengths are agreed before the counts are summed."""
    counts = json_per_rank(_RANK_WITH_OWN_LABELS, tmp_path)
    assert counts == [[1, 0, 0, 1], [1, 0, 0, 1]]


def test_no_positives_warns_and_no_assigner_fails(toy_cfg):
    """Images whose boxes were all filtered out give no positive prior (a
    warning, prior 0); a head built without train_cfg cannot assign."""
    init_default_scope('mmdet')
    cfg = toy_cfg('retinanet_fl.py')
    pipeline = cfg.train_dataloader.dataset.pipeline
    pipeline.insert(-1, dict(type='FilterAnnotations',
                             min_gt_bbox_wh=(1000, 1000), keep_empty=False))
    model = MODELS.build(cfg.model)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    with pytest.warns(UserWarning, match=f'no positive priors in '
                      f'{len(dataset)} images: the estimated prior is 0'):
        est = estimate_prior(model, dataset, None)
    assert est.num_fg == 0 and est.prior == 0 and est.num_valid > 0
    # OptimalBiasInit says why, not only that prior 0 has no bias
    from mmdet_freebies.engine.hooks import OptimalBiasInit
    with pytest.raises(ValueError, match='OptimalBiasInit: no positive '
                       f'RetinaHead priors in the {len(dataset)} counted '
                       'images, so no prior to start from'):
        OptimalBiasInit()._apply(model, 'bbox_head', model.bbox_head, est)
    cfg.model.train_cfg = None
    with pytest.raises(ValueError, match='RetinaHead has no assigner: build '
                       'the detector with its train_cfg'):
        estimate_prior(MODELS.build(cfg.model), dataset, 2)
