import copy
import json
import math
import os.path as osp

import numpy as np
import pytest

from mmdet.registry import DATASETS
from mmdet.utils import register_all_modules
from mmdet_freebies.utils.dataset_stats import (collect_annotations,
                                                compute_stats, format_table,
                                                plot_histograms)


# Worked by hand: boxes 10x10 (small), 50x10 (small, w/h 5: twisted) and
# 40x40 (medium) in images of 100x100, 200x100; one image without boxes.
RECORDS = [
    dict(width=100, height=100,
         bboxes=np.array([[0, 0, 10, 10], [0, 0, 50, 10]], float),
         labels=np.array([0, 1])),
    dict(width=200, height=100, bboxes=np.array([[5, 5, 45, 45]], float),
         labels=np.array([0])),
    dict(width=50, height=50, bboxes=np.zeros((0, 4)),
         labels=np.zeros(0, int)),
]


def test_hand_worked_statistics():
    s = compute_stats(RECORDS, ('a', 'b', 'c'))
    assert (s['num_images'], s['num_annotations'], s['empty_images'],
            s['ann_per_image_max']) == (3, 3, 1, 2)
    assert s['ann_per_image'] == pytest.approx(1.0)
    assert s['class_counts'] == [2, 1, 0]
    assert s['imbalance_ratio'] == math.inf  # class 'c' has no box
    assert compute_stats(RECORDS, ('a', 'b'))['imbalance_ratio'] == 2.0
    assert s['scale_px'] == pytest.approx((10 + math.sqrt(500) + 40) / 3)
    # a label past the classes (or negative) would count in no class
    for classes in (('a', ), ()):
        with pytest.raises(ValueError, match=r'labels \[1\] are not indices '
                           f'of the {len(classes)} classes'
                           if classes else r'labels \[0, 1\]'):
            compute_stats(RECORDS, classes)
    assert s['scale_rel'] == pytest.approx(
        (0.1 + math.sqrt(500) / 100 + 40 / math.sqrt(20000)) / 3)
    assert s['small_pct'] == pytest.approx(200 / 3)
    assert s['twisted_pct'] == pytest.approx(100 / 3)
    assert sorted(s['aspect_ratios'].tolist()) == [1.0, 1.0, 5.0]


def test_table_and_histograms(tmp_path):
    stats = dict(train=compute_stats(RECORDS, ('a', 'b', 'c')),
                 val=compute_stats(RECORDS[:1], ('a', 'b', 'c')))
    table = format_table(stats, dict(train=dict(fg_bg_ratio=0.01,
                                                prior=1e-3)))
    assert '| annotations per image | 1.00 | 2.00 |' in table
    assert '| small objects (< 32x32) % | 66.67 | 100.00 |' in table
    assert '| imbalance ratio (max/min class) | inf | inf |' in table
    assert '| anchor fg/bg ratio (assigner) | 0.01 | - |' in table
    assert '| c | 0 | 0 |' in table
    paths = plot_histograms(stats, str(tmp_path))
    assert [osp.basename(p) for p in paths] == [
        'box_sizes.png', 'aspect_ratios.png', 'classes.png']
    assert all(osp.getsize(p) > 1000 for p in paths)


def test_boxes_at_the_edges_as_coco_gives_them():
    """COCO boxes [x, y, w, h] as corners x + w: a 32x32 box (float32, as
    mmdet loads it) is not small and a 40x10 one (float64, as CocoDataset
    parses it) is not twisted, though the corners' differences give an
    area below 32^2 and w/h above 4."""
    square = np.array([[12.3, 40.7, 12.3 + 32, 40.7 + 32]], np.float32)
    wide = np.array([[0, 13.9, 0 + 40, 13.9 + 10]])
    w, h = (square[:, 2:].astype(float) - square[:, :2]).T
    assert w[0] * h[0] < 32**2
    w, h = (wide[:, 2:] - wide[:, :2]).T
    assert w[0] / h[0] > 4
    s = compute_stats([dict(width=100, height=100,
                            bboxes=np.concatenate([square, wide]),
                            labels=np.array([0, 0]))], ('a', ))
    # (the 40x10 box is small: 400 px)
    assert s['small_pct'] == 50 and s['twisted_pct'] == 0


def test_splits_with_other_classes_are_matched_by_name(tmp_path):
    """A val set listing other classes, or the same in another order: the
    table and the plot count each class under its own name."""
    stats = dict(train=compute_stats(RECORDS, ('a', 'b', 'c')),
                 val=compute_stats(RECORDS[:1], ('b', 'a')))
    table = format_table(stats)
    assert '| a | 2 | 1 |' in table and '| b | 1 | 1 |' in table
    assert '| c | 0 | - |' in table
    assert len(plot_histograms(stats, str(tmp_path))) == 3


def test_split_histograms_are_shares_of_boxes(tmp_path, monkeypatch):
    """With two splits each bar is a share of its split's boxes, so the
    bars of a split sum to 1 on the log bins; a density would divide by
    each bin's linear width and shrink the bars of large boxes."""
    import matplotlib.axes
    hist, bars = matplotlib.axes.Axes.hist, []

    def spy(self, x, *args, **kwargs):
        out = hist(self, x, *args, **kwargs)
        bars.append(out[0])
        return out

    monkeypatch.setattr(matplotlib.axes.Axes, 'hist', spy)
    stats = dict(train=compute_stats(RECORDS, ('a', 'b', 'c')),
                 val=compute_stats(RECORDS[:1], ('a', 'b', 'c')))
    plot_histograms(stats, str(tmp_path))
    assert len(bars) == 4  # sizes and aspect ratios, two splits each
    for heights in bars:
        assert heights.sum() == pytest.approx(1.0)


def test_collect_matches_the_annotation_file(toy_cfg, toy_data_root):
    register_all_modules()
    cfg = toy_cfg('retinanet_fl.py')
    # --toy 'tiny' keeps 8 of the 16 images; read all of them here.
    cfg.train_dataloader.dataset.pop('indices', None)
    records = collect_annotations(DATASETS.build(
        cfg.train_dataloader.dataset), progress=False)
    with open(osp.join(toy_data_root, 'annotations', 'train.json')) as f:
        coco = json.load(f)
    assert len(records) == len(coco['images'])
    assert sum(len(r['labels']) for r in records) == len(coco['annotations'])
    x, y, w, h = coco['annotations'][0]['bbox']
    first = next(r for r in records if len(r['labels']))
    assert first['bboxes'][0].tolist() == pytest.approx([x, y, x + w, y + h])


def test_collect_reads_every_part_of_a_concat_dataset(toy_cfg,
                                                     toy_data_root):
    """VOC07+12 style: a ConcatDataset (here train + val, one of them
    repeated) counts each part's images once."""
    register_all_modules()
    cfg = toy_cfg('retinanet_fl.py')
    train = copy.deepcopy(cfg.train_dataloader.dataset)
    train.pop('indices', None)
    val = copy.deepcopy(train)
    val.update(ann_file='annotations/val.json',
               data_prefix=dict(img='val/'))
    concat = DATASETS.build(dict(
        type='ConcatDataset',
        datasets=[dict(type='RepeatDataset', times=3, dataset=train), val]))
    records = collect_annotations(concat, progress=False)
    num = {}
    for split in ('train', 'val'):
        with open(osp.join(toy_data_root, 'annotations',
                           f'{split}.json')) as f:
            coco = json.load(f)
        num[split] = (len(coco['images']), len(coco['annotations']))
    assert len(records) == num['train'][0] + num['val'][0]
    assert sum(len(r['labels']) for r in records) == \
        num['train'][1] + num['val'][1]


def test_class_aware_config_builds_its_sampler(toy_cfg):
    from mmengine.runner import Runner

    from mmdet.datasets.samplers import ClassAwareSampler
    register_all_modules()
    cfg = toy_cfg('retinanet_fl_class_aware.py')
    assert cfg.train_dataloader.sampler == dict(type='ClassAwareSampler',
                                                num_sample_class=1)
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    sampler = loader.batch_sampler.sampler  # inside AspectRatioBatchSampler
    assert isinstance(sampler, ClassAwareSampler)
    # One epoch keeps the length of the dataset (same schedule as random).
    assert len(list(iter(sampler))) == len(loader.dataset)


@pytest.mark.parametrize('config', ['retinanet_fl.py', 'yolov3_baseline.py'])
def test_anchor_balance_is_the_prior_estimator_s_count(toy_cfg, config):
    """num_bg is the valid priors that are not foreground, the ratio
    num_fg / num_bg and the prior num_fg / num_valid / C, over the config's
    training batches (YOLOv3's class prior, 1 / C, is not that)."""
    from mmdet.registry import MODELS

    from mmdet_freebies.models.task_modules.prior_estimator import \
        estimate_prior
    from mmdet_freebies.utils.dataset_stats import anchor_balance
    cfg = toy_cfg(config)
    np.random.seed(0)  # the same flips for both counts
    balance = anchor_balance(cfg, num_images=8)
    np.random.seed(0)
    est = estimate_prior(MODELS.build(cfg.model),
                         cfg.train_dataloader.dataset, num_images=8,
                         batch_size=cfg.train_dataloader.batch_size)
    num_bg = est.num_valid - est.num_fg
    assert (balance['num_fg'], balance['num_bg']) == (est.num_fg, num_bg)
    assert balance['fg_bg_ratio'] == pytest.approx(est.num_fg / num_bg)
    assert balance['prior'] == pytest.approx(est.num_fg / est.num_valid / 4)
    if config == 'retinanet_fl.py':
        assert balance['prior'] == pytest.approx(est.prior)
    assert balance['num_images'] == 8 and balance['head'] == type(
        MODELS.build(cfg.model).bbox_head).__name__
