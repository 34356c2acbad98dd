"""OptimalBiasInit: exact bias per supported head, errors, when it runs
(not on resume / load_from unless forced), the JSON record, and a 2-process
gloo run whose ranks agree with the single-process count."""
import dataclasses
import json
import math
import os
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.dataset import DefaultSampler, pseudo_collate
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from torch.utils.data import DataLoader

from mmdet.datasets.samplers import AspectRatioBatchSampler
from mmdet.registry import DATASETS, HOOKS, MODELS
from mmdet_freebies.engine.hooks.optimal_bias_init import (OptimalBiasInit,
                                                           _batch_size,
                                                           cls_layer_name)
from mmdet_freebies.models.task_modules.prior_estimator import (estimate_prior,
                                                                prior_to_bias)

from helpers import CONFIGS, run_two_ranks



class FakeRunner:
    """The parts of mmengine's Runner the hook reads."""

    def __init__(self,
                 model,
                 dataset,
                 work_dir,
                 resume=False,
                 load_from=None,
                 has_loaded=False):
        self.model = model
        self.train_dataloader = DataLoader(dataset,
                                           batch_size=2,
                                           collate_fn=pseudo_collate)
        self.work_dir = str(work_dir)
        self._resume, self._load_from = resume, load_from
        self._has_loaded = has_loaded
        self.logger = MMLogger.get_instance('test_optimal_bias_init')


def _build(cfg):
    init_default_scope('mmdet')
    torch.manual_seed(0)
    return (MODELS.build(cfg.model),
            DATASETS.build(cfg.train_dataloader.dataset))


def _cls_bias(model):
    head = getattr(model, 'rpn_head', None) or model.bbox_head
    return getattr(head, cls_layer_name(head)).bias.detach().clone()


def _run_hook(runner, checkpoint=None, **kwargs):
    """The hook's calls in mmengine's order: before_run, then (loading a
    checkpoint) after_load_checkpoint, then before_train."""
    hook = OptimalBiasInit(**kwargs)
    hook.before_run(runner)
    if checkpoint is not None:
        hook.after_load_checkpoint(runner, checkpoint)
    np.random.seed(0)
    hook.before_train(runner)
    return hook


def _estimate(model, dataset, num_images=1000):
    np.random.seed(0)
    return estimate_prior(model, dataset, num_images, batch_size=2)


def test_registered_and_exact_constant_bias(toy_cfg, tmp_path):
    hook = HOOKS.build(dict(type='OptimalBiasInit', prior=1e-5))
    model, dataset = _build(toy_cfg('retinanet_fl.py'))
    runner = FakeRunner(model, dataset, tmp_path)
    hook.before_run(runner)
    hook.before_train(runner)
    bias = model.bbox_head.retina_cls.bias
    assert torch.all(bias == torch.tensor(-math.log((1 - 1e-5) / 1e-5)))
    record = json.load(open(tmp_path / 'optimal_bias_init.json'))
    assert record['source'] == 'constant' and 'estimate' not in record
    assert record['bias'] == pytest.approx(-math.log(99999.0))


@pytest.mark.parametrize('name,layer', [('retinanet_fl.py', 'retina_cls'),
                                        ('fcos_fl.py', 'conv_cls'),
                                        ('atss_fl.py', 'atss_cls'),
                                        ('paa_fl.py', 'atss_cls'),
                                        ('faster_rcnn_biased.py', 'rpn_cls')])
def test_counted_bias_per_head(toy_cfg, tmp_path, name, layer):
    model, dataset = _build(toy_cfg(name))
    roi_bias = (model.roi_head.bbox_head.fc_cls.bias.clone()
                if name.startswith('faster') else None)
    est = _estimate(model, dataset)
    _run_hook(FakeRunner(model, dataset, tmp_path))
    head = getattr(model, 'rpn_head', None) or model.bbox_head
    assert cls_layer_name(head) == layer
    expected = -math.log((1 - est.prior) / est.prior)
    assert 0 < est.prior < 0.5
    assert torch.allclose(_cls_bias(model),
                          torch.full_like(_cls_bias(model), expected))
    record = json.load(open(tmp_path / 'optimal_bias_init.json'))
    assert record['prior'] == pytest.approx(est.prior)
    assert record['bias'] == pytest.approx(expected)
    assert record['estimate']['num_fg'] == est.num_fg
    assert record['seconds'] > 0
    if roi_bias is not None:  # the softmax RoI head is left alone
        assert torch.equal(model.roi_head.bbox_head.fc_cls.bias, roi_bias)


def test_per_class_bias(toy_cfg, tmp_path):
    model, dataset = _build(toy_cfg('retinanet_fl.py'))
    est = _estimate(model, dataset)
    _run_hook(FakeRunner(model, dataset, tmp_path), per_class=True)
    expected = torch.tensor([prior_to_bias(p) for p in est.per_class_prior])
    head = model.bbox_head
    bias = _cls_bias(model).view(head.num_base_priors, head.num_classes)
    assert torch.allclose(bias, expected.float().expand_as(bias))
    assert len(set(est.per_class_prior)) > 1  # the classes differ


def test_per_class_unseen_class_falls_back_with_warning(toy_cfg, tmp_path):
    cfg = toy_cfg('retinanet_fl.py')
    # a fifth class that no image shows
    metainfo = cfg.train_dataloader.dataset.metainfo
    metainfo.classes = tuple(metainfo.classes) + ('absent', )
    cfg.model.bbox_head.num_classes = 5
    model, dataset = _build(cfg)
    with pytest.warns(UserWarning, match=r'classes \[4\]'):
        _run_hook(FakeRunner(model, dataset, tmp_path), per_class=True)
    bias = _cls_bias(model).view(-1, 5)
    record = json.load(open(tmp_path / 'optimal_bias_init.json'))
    est_prior = record['estimate']['prior']
    assert bias[0, 4].item() == pytest.approx(prior_to_bias(est_prior))


def test_yolov3_objectness_and_class_priors(toy_cfg, tmp_path):
    model, dataset = _build(toy_cfg('yolov3_baseline.py'))
    est = _estimate(model, dataset)
    _run_hook(FakeRunner(model, dataset, tmp_path))
    head = model.bbox_head
    obj = prior_to_bias(est.objectness_prior)
    cls = prior_to_bias(1 / head.num_classes)
    for conv in head.convs_pred:
        bias = conv.bias.view(-1, head.num_attrib)
        assert torch.allclose(bias[:, 4], torch.tensor(obj))
        assert torch.allclose(bias[:, 5:], torch.tensor(cls))
    assert obj < cls < 0


def test_yolov3_per_class_with_a_single_counted_class_is_named(toy_cfg):
    """YOLOv3's class channels train on positives only: a class with every
    counted positive has prior 1 (bias +inf), said with what to do."""
    model, dataset = _build(toy_cfg('yolov3_baseline.py'))
    est = _estimate(model, dataset, num_images=2)
    est = dataclasses.replace(
        est, fg_per_class=[est.num_cls_valid] + [0.0] * (est.num_classes - 1))
    assert est.per_class_prior[0] == 1.0
    with pytest.warns(UserWarning, match='have no positive'), \
            pytest.raises(ValueError, match='per_class=True: class 0 has '
                          'every positive in the 2 counted images \\(prior '
                          '1, bias \\+inf\\)'):
        OptimalBiasInit(per_class=True)._apply(model, 'bbox_head',
                                               model.bbox_head, est)


@pytest.mark.parametrize('num_classes', [4, 1])
def test_yolov3_constant_prior_is_for_objectness(toy_cfg, tmp_path,
                                                 num_classes):
    """The class channels train on positives only: 1 / C, not the
    objectness prior; with one class (target 1, an infinite logit) they
    keep their initialisation."""
    cfg = toy_cfg('yolov3_baseline.py')
    cfg.model.bbox_head.num_classes = num_classes
    model, dataset = _build(cfg)
    head = model.bbox_head
    before = [c.bias.detach().clone().view(-1, head.num_attrib)
              for c in head.convs_pred]
    _run_hook(FakeRunner(model, dataset, tmp_path), prior=1e-3)
    for conv, old in zip(head.convs_pred, before):
        bias = conv.bias.detach().view(-1, head.num_attrib)
        assert torch.allclose(bias[:, 4],
                              torch.tensor(prior_to_bias(1e-3)))
        expected = old[:, 5:] if num_classes == 1 else torch.full_like(
            old[:, 5:], prior_to_bias(1 / num_classes))
        assert torch.allclose(bias[:, 5:], expected)
    record = json.load(open(tmp_path / 'optimal_bias_init.json'))
    assert record['objectness_prior'] == 1e-3
    assert record['prior'] == (None if num_classes == 1 else 0.25)


@pytest.mark.parametrize('roi_fg_fraction,fg', [(None, 0.25), (0.2, 0.2)])
def test_roi_log_prior(toy_cfg, tmp_path, roi_fg_fraction, fg):
    """The RoI head's softmax bias: log(1 - fg) for background and fg
    split by the gt class frequencies; fg is the RoI sampler's pos_fraction
    (0.25) unless roi_fg_fraction is given."""
    model, dataset = _build(toy_cfg('faster_rcnn_biased.py'))
    _run_hook(FakeRunner(model, dataset, tmp_path), roi_log_prior=True,
              roi_fg_fraction=roi_fg_fraction)
    probs = model.roi_head.bbox_head.fc_cls.bias.detach().double().exp()
    assert probs[-1].item() == pytest.approx(1 - fg)  # background is last
    gt = json.load(open(
        tmp_path / 'optimal_bias_init.json'))['estimate']['num_gt_per_class']
    assert probs[:-1].numpy() == pytest.approx(fg * np.array(gt) / sum(gt),
                                               rel=1e-5)


def test_roi_log_prior_errors_name_what_is_missing(toy_cfg, tmp_path):
    """Sampling-Free's RoI head keeps every proposal (KeepAllSampler, no
    pos_fraction): roi_log_prior then needs roi_fg_fraction, said before
    training. Counted classes that fc_cls does not score are refused
    before any bias changes."""
    model, dataset = _build(toy_cfg('faster_rcnn_sf.py'))
    with pytest.raises(ValueError, match='roi_log_prior=True needs '
                       "roi_fg_fraction, or a train_cfg.rcnn.sampler with "
                       "pos_fraction \\(got sampler .*KeepAllSampler"):
        OptimalBiasInit(roi_log_prior=True).before_run(
            FakeRunner(model, dataset, tmp_path))
    model, dataset = _build(toy_cfg('faster_rcnn_biased.py'))
    estimate = estimate_prior(model, dataset, 2, batch_size=2)
    estimate.num_gt_per_class = [1, 1, 1]  # 3 classes, fc_cls has 4 + 1
    rpn_bias = _cls_bias(model)
    with pytest.raises(ValueError, match='expects a softmax fc_cls with 4 '
                       'outputs \\(classes \\+ background\\), got 5 in '
                       'Shared2FCBBoxHead.fc_cls \\(3 classes from the '
                       'counted boxes\\)'):
        OptimalBiasInit(roi_log_prior=True)._apply(model, 'rpn_head',
                                                   model.rpn_head, estimate)
    assert torch.equal(_cls_bias(model), rpn_bias)


def _no_fc_cls(bbox_head):
    bbox_head.fc_cls = None  # with_cls=False


def _conv_fc_cls(bbox_head):
    bbox_head.fc_cls = torch.nn.Conv2d(8, 5, 1)


def _fc_cls_without_bias(bbox_head):
    bbox_head.fc_cls = torch.nn.Linear(8, 5, bias=False)


def _sigmoid_fc_cls(bbox_head):
    bbox_head.fc_cls = torch.nn.Linear(8, 4)  # no background output


@pytest.mark.parametrize('change,message', [
    (None, 'ModuleList has no fc_cls \\(a multi-stage roi_head, e.g. '
     'Cascade R-CNN, has one bbox_head per stage\\)'),
    (_no_fc_cls, 'Shared2FCBBoxHead has no fc_cls'),
    (_conv_fc_cls, 'Shared2FCBBoxHead.fc_cls is a Conv2d'),
    (_fc_cls_without_bias, 'Shared2FCBBoxHead.fc_cls has no bias'),
    (_sigmoid_fc_cls, 'expects a softmax fc_cls with 5 outputs \\(classes '
     '\\+ background\\), got 4 in Shared2FCBBoxHead.fc_cls \\(4 classes '
     'from Shared2FCBBoxHead.num_classes\\)'),
])
def test_roi_log_prior_unsuitable_fc_cls_fails_in_before_run(
        toy_cfg, tmp_path, change, message):
    """A missing or unsuitable fc_cls fails before the count and before the
    RPN bias changes, not after them (Cascade R-CNN's bbox_head is a list
    of heads, one per stage)."""
    model, dataset = _build(toy_cfg('faster_rcnn_biased.py'))
    if change is None:  # as Cascade R-CNN: a list of heads and of rcnn cfgs
        model.roi_head.bbox_head = torch.nn.ModuleList(
            [model.roi_head.bbox_head] * 3)
        model.train_cfg['rcnn'] = [model.train_cfg['rcnn']] * 3
    else:
        change(model.roi_head.bbox_head)
    with pytest.raises(ValueError, match=message):
        OptimalBiasInit(roi_log_prior=True).before_run(
            FakeRunner(model, dataset, tmp_path))


@pytest.mark.parametrize('pos_fraction', [1.0, 0.0, '0.25'])
def test_roi_log_prior_sampler_pos_fraction_in_0_1(toy_cfg, tmp_path,
                                                    pos_fraction):
    """pos_fraction=1 would give the background bias log(0) = -inf."""
    cfg = toy_cfg('faster_rcnn_biased.py')
    cfg.model.train_cfg.rcnn.sampler.pos_fraction = pos_fraction
    model, dataset = _build(cfg)
    with pytest.raises(ValueError, match='pos_fraction must lie in '
                       f'\\(0, 1\\), got pos_fraction={pos_fraction!r}'):
        OptimalBiasInit(roi_log_prior=True).before_run(
            FakeRunner(model, dataset, tmp_path))


def test_roi_classes_unlike_the_dataset_fail_before_the_count(
        toy_cfg, tmp_path, monkeypatch):
    """An RoI head of 10 classes on the 4-class toy set: refused before
    the (class-agnostic) RPN's prior is counted and its bias set."""
    from mmdet_freebies.engine.hooks import optimal_bias_init
    cfg = toy_cfg('faster_rcnn_biased.py')
    cfg.model.roi_head.bbox_head.num_classes = 10
    model, dataset = _build(cfg)
    rpn_bias = _cls_bias(model)

    def no_count(*args, **kwargs):
        pytest.fail('counted before the RoI head was checked')

    monkeypatch.setattr(optimal_bias_init, 'estimate_prior', no_count)
    with pytest.raises(ValueError, match='expects a softmax fc_cls with 5 '
                       'outputs .*, got 11 in Shared2FCBBoxHead.fc_cls '
                       "\\(4 classes from the training set's "
                       "metainfo\\['classes'\\]\\)"):
        _run_hook(FakeRunner(model, dataset, tmp_path), roi_log_prior=True)
    assert torch.equal(_cls_bias(model), rpn_bias)


def test_dense_head_classes_unlike_the_dataset_fail_before_any_change(
        toy_cfg, tmp_path):
    """A RetinaHead of 10 classes on the 4-class toy set: the count refuses
    it and the bias is left as it was."""
    cfg = toy_cfg('retinanet_fl.py')
    cfg.model.bbox_head.num_classes = 10
    model, dataset = _build(cfg)
    bias = _cls_bias(model)
    with pytest.raises(ValueError, match='RetinaHead has num_classes=10 but '
                       'the dataset has 4 classes'):
        _run_hook(FakeRunner(model, dataset, tmp_path))
    assert torch.equal(_cls_bias(model), bias)


def test_roi_log_prior_warns_about_unseen_classes(toy_cfg, tmp_path):
    """A class the counted images never show gets half a box, and the run
    says so."""
    model, dataset = _build(toy_cfg('faster_rcnn_biased.py'))
    estimate = estimate_prior(model, dataset, 2, batch_size=2)
    estimate.num_gt_per_class = [3, 0, 5, 2]
    with pytest.warns(UserWarning, match=re.escape('classes [1] have no box')):
        OptimalBiasInit(roi_log_prior=True)._set_roi_log_prior(
            model, estimate)
    probs = model.roi_head.bbox_head.fc_cls.bias.detach().double().exp()
    assert probs[:-1].numpy() == pytest.approx(
        0.25 * np.array([3, 0.5, 5, 2]) / 10.5, rel=1e-6)


def test_seed_draws_the_counted_images(toy_cfg, tmp_path):
    """4 of the 16 toy images: the hook counts the ones its seed draws."""
    model, dataset = _build(toy_cfg('retinanet_fl.py'))
    _run_hook(FakeRunner(model, dataset, tmp_path), num_images=4, seed=3)
    record = json.load(open(tmp_path / 'optimal_bias_init.json'))
    counts = {}
    for s in (0, 3):
        np.random.seed(0)  # the flips, as _run_hook draws them
        counts[s] = estimate_prior(model, dataset, 4, batch_size=2,
                                   seed=s).num_fg
    assert counts[0] != counts[3]
    assert record['estimate']['num_fg'] == counts[3]


def test_batch_size_of_mmdet_s_batch_sampler_loaders(toy_cfg):
    """mmdet's loaders batch with a batch sampler (``loader.batch_size`` is
    None); the count must use the training batch, whose padding sets the
    valid anchors."""
    _, dataset = _build(toy_cfg('retinanet_fl.py'))
    sampler = AspectRatioBatchSampler(DefaultSampler(dataset), batch_size=3)
    assert _batch_size(DataLoader(dataset, batch_sampler=sampler)) == 3
    assert _batch_size(DataLoader(dataset, batch_size=2)) == 2


def test_counts_in_aspect_ratio_groups_where_training_does(
        toy_cfg, tmp_path, monkeypatch):
    """With an AspectRatioBatchSampler loader (mmdet's COCO configs) the
    count batches portrait and landscape images apart, as training does."""
    from mmdet_freebies.engine.hooks import optimal_bias_init
    model, dataset = _build(toy_cfg('fcos_fl.py'))
    seen = []

    def spy(*args, **kwargs):
        seen.append((kwargs['batch_size'], kwargs['aspect_ratio_groups']))
        return estimate_prior(*args, **kwargs)

    monkeypatch.setattr(optimal_bias_init, 'estimate_prior', spy)
    runner = FakeRunner(model, dataset, tmp_path)
    _run_hook(runner, num_images=2)
    runner.train_dataloader = DataLoader(
        dataset,
        batch_sampler=AspectRatioBatchSampler(DefaultSampler(dataset), 3),
        collate_fn=pseudo_collate)
    _run_hook(runner, num_images=2)
    assert seen == [(2, False), (3, True)]


def test_softmax_dense_head_fails_in_before_run(toy_cfg, tmp_path):
    """-log((1 - p) / p) is a sigmoid's bias: a softmax RetinaHead is
    refused before training, counted or with a constant prior."""
    cfg = toy_cfg('retinanet_fl.py')
    cfg.model.bbox_head.loss_cls = dict(type='CrossEntropyLoss',
                                        use_sigmoid=False, loss_weight=1.0)
    model, dataset = _build(cfg)
    for kwargs in (dict(), dict(prior=1e-3)):
        with pytest.raises(ValueError, match='RetinaHead uses a softmax '
                           'classifier \\(loss_cls.use_sigmoid=False\\)'):
            OptimalBiasInit(**kwargs).before_run(
                FakeRunner(model, dataset, tmp_path))


def test_unknown_head_fails_in_before_run(toy_cfg, tmp_path):
    model, dataset = _build(toy_cfg('retinanet_fl.py'))
    model.bbox_head = MODELS.build(
        dict(type='CenterNetHead',
             in_channels=8,
             feat_channels=8,
             num_classes=4))
    with pytest.raises(ValueError, match="'CenterNetHead'"):
        OptimalBiasInit().before_run(FakeRunner(model, dataset, tmp_path))
    with pytest.raises(ValueError, match='has no roi_head'):
        OptimalBiasInit(roi_log_prior=True, roi_fg_fraction=0.2).before_run(
            FakeRunner(*_build(toy_cfg('retinanet_fl.py')), tmp_path))


def test_a_subclass_with_its_own_targets_is_not_counted(toy_cfg, tmp_path):
    """FreeAnchor subclasses RetinaHead but trains a bag loss on its own
    matches: its prior is refused, not counted with RetinaHead's rule; a
    constant prior still goes on its retina_cls."""
    cfg = toy_cfg('retinanet_fl.py')
    cfg.model.bbox_head.type = 'FreeAnchorRetinaHead'
    model, dataset = _build(cfg)
    runner = FakeRunner(model, dataset, tmp_path)
    with pytest.raises(ValueError, match="'FreeAnchorRetinaHead' \\(a "
                       'subclass of RetinaHead'):
        OptimalBiasInit().before_run(runner)
    _run_hook(runner, prior=1e-2)
    assert model.bbox_head.retina_cls.bias.detach() == pytest.approx(
        math.log(1e-2 / 0.99), abs=1e-6)


@pytest.mark.parametrize(
    'kwargs,key',
    [(dict(prior=0.0), 'prior'), (dict(prior=1.0), 'prior'),
     (dict(prior=-1e-3), 'prior'), (dict(prior='0.1'), 'prior'),
     (dict(prior=True), 'prior'),
     (dict(num_images=0), 'num_images'), (dict(num_images=2.5), 'num_images'),
     (dict(prior=1e-4, per_class=True), 'per_class'),
     (dict(roi_fg_fraction=0.25), 'roi_fg_fraction'),
     (dict(roi_log_prior=True, roi_fg_fraction=1.5), 'roi_fg_fraction'),
     (dict(per_class='no'), "per_class='no'"),
     (dict(force='False'), "force='False'"),
     (dict(seed='abc'), "seed='abc'"),
     (dict(num_workers=-3), 'num_workers=-3')])
def test_bad_arguments(kwargs, key):
    with pytest.raises(ValueError, match=key):
        OptimalBiasInit(**kwargs)


def test_numpy_priors_are_numbers():
    # e.g. a prior computed with numpy in a config
    assert OptimalBiasInit(prior=np.float32(0.01)).prior == \
        pytest.approx(0.01)


@pytest.mark.parametrize(
    'state,force,runs',
    [
        (dict(resume=True, has_loaded=True), False, False),
        # a resume never re-initialises, even where mmengine's non-strict
        # load skipped a classification layer of another shape
        (dict(resume=True, load_from='other_classes', has_loaded=True),
         False, False),
        (dict(load_from='same', has_loaded=True), False, False),
        (dict(load_from='same', has_loaded=True), True, True),
        # a fine-tune to other classes: mmengine skips the mismatched layer,
        # which keeps its default init
        (dict(load_from='other_classes', has_loaded=True), False, True),
        (dict(load_from='no_head', has_loaded=True), False, True),
        # --resume that found no checkpoint trains from scratch
        (dict(resume=True, has_loaded=False), False, True),
        # a runner without mmengine's _has_loaded: the config decides
        (dict(resume=True, has_loaded=None), False, False),
        (dict(load_from='same', has_loaded=None), False, False),
        (dict(has_loaded=None), False, True),
    ])
def test_runs_only_from_scratch(toy_cfg, tmp_path, state, force, runs):
    model, dataset = _build(toy_cfg('retinanet_fl.py'))
    before = _cls_bias(model)
    checkpoint = None
    if 'load_from' in state:
        # saved as DDP does (module. prefix), which load_from strips
        weights = {f'module.{k}': v for k, v in model.state_dict().items()}
        if state['load_from'] == 'other_classes':
            weights['module.bbox_head.retina_cls.bias'] = torch.zeros(9 * 80)
        elif state['load_from'] == 'no_head':
            weights = {k: v for k, v in weights.items() if 'bbox_head' not in k}
        checkpoint = dict(state_dict=weights)
        state = dict(state, load_from=str(tmp_path / 'load_from.pth'))
    runner = FakeRunner(model, dataset, tmp_path, **state)
    if state['has_loaded'] is None:
        del runner._has_loaded
    _run_hook(runner, checkpoint, prior=1e-3, force=force)
    assert torch.equal(_cls_bias(model), before) != runs
    assert osp.exists(tmp_path / 'optimal_bias_init.json') == runs


def _runner_cfg(tmp_path, toy_cfg, **hook):
    cfg = toy_cfg('retinanet_fl.py')
    cfg.custom_hooks = [dict(type='OptimalBiasInit', **hook)]
    cfg.work_dir = str(tmp_path)
    cfg.default_hooks.checkpoint.update(interval=1, max_keep_ckpts=1)
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    return cfg


@pytest.mark.slow
def test_runner_from_scratch_then_resume(tmp_path, toy_cfg):
    """A real run records the estimate; resuming from its checkpoint keeps
    the checkpoint's bias (the hook runs after load_or_resume and skips)."""
    cfg = _runner_cfg(tmp_path, toy_cfg, num_images=4)
    Runner.from_cfg(cfg).train()
    path = tmp_path / 'optimal_bias_init.json'
    record = json.load(open(path))
    assert record['estimate']['num_images'] == 4
    assert record['bias'] == pytest.approx(prior_to_bias(record['prior']))
    os.remove(path)
    ckpt = osp.join(tmp_path, 'epoch_1.pth')
    checkpoint = torch.load(ckpt, map_location='cpu', weights_only=False)
    saved = checkpoint['state_dict']['bbox_head.retina_cls.bias']
    # mmengine's HistoryBuffer pickles `getattr`, which torch >= 2.6's
    # weights-only loader rejects; the logged scalars are not under test
    checkpoint['message_hub']['log_scalars'] = {}
    torch.save(checkpoint, ckpt)
    cfg = _runner_cfg(tmp_path, toy_cfg, num_images=4)
    cfg.resume, cfg.load_from = True, ckpt
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert torch.equal(runner.model.bbox_head.retina_cls.bias.detach(), saved)
    assert not osp.exists(path)
    # a fine-tune from it to other classes: mmengine loads around the
    # mismatched retina_cls, which keeps its default init, so the hook runs
    for key in ('weight', 'bias'):
        tensor = checkpoint['state_dict'][f'bbox_head.retina_cls.{key}']
        checkpoint['state_dict'][f'bbox_head.retina_cls.{key}'] = \
            tensor.new_zeros((9 * 80, ) + tensor.shape[1:])
    torch.save(checkpoint, ckpt)
    cfg = _runner_cfg(tmp_path, toy_cfg, num_images=4)
    cfg.load_from = ckpt
    Runner.from_cfg(cfg).train()
    record = json.load(open(path))
    assert record['bias'] == pytest.approx(prior_to_bias(record['prior']))


# One rank of the DDP test (run by torch.distributed.run): the hook on the
# toy RetinaNet with a FakeRunner-like object, on the gloo group.
_DDP_WORKER = """
import os, sys, types
import numpy as np, torch, torch.distributed as dist
from mmengine.config import Config
from mmengine.dataset import DefaultSampler, pseudo_collate
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from torch.utils.data import DataLoader
import mmdet_freebies
from mmdet.registry import DATASETS, MODELS
from mmdet_freebies.engine.hooks.optimal_bias_init import OptimalBiasInit
from mmdet_freebies.utils.toy import apply_toy

config, data_root, out_dir = sys.argv[1:4]
dist.init_process_group('gloo')
rank = dist.get_rank()
cfg = apply_toy(Config.fromfile(config), 'tiny', data_root)
pipeline = cfg.train_dataloader.dataset.pipeline
cfg.train_dataloader.dataset.pipeline = [
    t for t in pipeline if t['type'] != 'RandomFlip']
init_default_scope('mmdet')
torch.manual_seed(0)
model = MODELS.build(cfg.model)
dataset = DATASETS.build(cfg.train_dataloader.dataset)
work_dir = os.path.join(out_dir, f'rank{rank}')
os.makedirs(work_dir)
runner = types.SimpleNamespace(
    model=model, work_dir=work_dir, _resume=False, _load_from=None,
    _has_loaded=False, logger=MMLogger.get_instance('ddp_obi'),
    train_dataloader=DataLoader(dataset, batch_size=2,
                                collate_fn=pseudo_collate))
hook = OptimalBiasInit(num_images=None)
hook.before_run(runner)
hook.before_train(runner)
torch.save(model.bbox_head.retina_cls.bias.detach(),
           os.path.join(out_dir, f'bias{rank}.pt'))
dist.destroy_process_group()
"""


def _no_flip_cfg(toy_cfg):
    cfg = toy_cfg('retinanet_fl.py')
    # no random flip: the DDP and single-process counts must see the same
    # targets
    pipeline = cfg.train_dataloader.dataset.pipeline
    cfg.train_dataloader.dataset.pipeline = [
        t for t in pipeline if t['type'] != 'RandomFlip'
    ]
    return cfg


@pytest.mark.slow
def test_ddp_ranks_share_the_bias_of_all_shards(tmp_path, toy_data_root,
                                                toy_cfg):
    """2 gloo processes: each counts its shard, the counts are all-reduced,
    both ranks set the bias of the single-process count over all images."""
    script = tmp_path / 'worker.py'
    script.write_text(_DDP_WORKER)
    proc = run_two_ranks(script, osp.join(CONFIGS, 'retinanet_fl.py'),
                         toy_data_root, str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bias0 = torch.load(tmp_path / 'bias0.pt')
    bias1 = torch.load(tmp_path / 'bias1.pt')
    assert torch.equal(bias0, bias1)
    model, dataset = _build(_no_flip_cfg(toy_cfg))
    est = estimate_prior(model, dataset, None, batch_size=2, distributed=False)
    assert torch.allclose(bias0, torch.tensor(prior_to_bias(est.prior)))
    # only rank 0 writes the record; it holds the summed counts
    record = json.load(open(tmp_path / 'rank0' / 'optimal_bias_init.json'))
    assert not osp.exists(tmp_path / 'rank1' / 'optimal_bias_init.json')
    assert record['estimate']['num_images'] == len(dataset) == 8
    assert record['estimate']['num_fg'] == est.num_fg
    assert record['estimate']['num_valid'] == est.num_valid
    # one shard alone counts fewer positives: the ranks did share
    half = estimate_prior(model,
                          torch.utils.data.Subset(dataset, range(0, 8, 2)),
                          None,
                          distributed=False)
    assert half.num_fg < est.num_fg


def test_constant_prior_with_the_roi_log_prior(toy_cfg, tmp_path):
    """A given prior (nothing counted) still sets the RoI classifier's
    background bias from roi_fg_fraction: log(1 - 0.25)."""
    model, dataset = _build(toy_cfg('faster_rcnn_biased.py'))
    _run_hook(FakeRunner(model, dataset, tmp_path), prior=1e-4,
              roi_log_prior=True, roi_fg_fraction=0.25)
    assert torch.allclose(model.rpn_head.rpn_cls.bias.detach(),
                          torch.tensor(prior_to_bias(1e-4)))
    bias = model.roi_head.bbox_head.fc_cls.bias.detach().double()
    assert bias[-1].item() == pytest.approx(math.log(0.75))
