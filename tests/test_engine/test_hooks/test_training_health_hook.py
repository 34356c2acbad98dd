import math
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MessageHub, MMLogger
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.optim.scheduler import LinearLR
from mmengine.runner import Runner
from torch import nn

from mmdet_freebies.engine.hooks.training_health_hook import (
    REMEDIES, TrainingFailureError, TrainingHealthHook, _fg_scores,
    head_loss_ratios)

from helpers import json_per_rank


class _Head(nn.Module):
    """A RetinaHead stand-in: ``retina_cls`` with A anchors x C classes."""

    def __init__(self, num_classes=3, num_anchors=2, bias=0.0):
        super().__init__()
        self.num_classes = num_classes
        self.num_base_priors = num_anchors
        self.use_sigmoid_cls = True
        self.retina_cls = nn.Conv2d(4, num_anchors * num_classes, 1)
        nn.init.constant_(self.retina_cls.bias, bias)


def _runner(tmp_path, bias=0.0, name='health'):
    model = nn.Module()
    model.bbox_head = _Head(bias=bias)
    hooks = []
    return SimpleNamespace(
        model=model, iter=0, work_dir=str(tmp_path), param_schedulers=[],
        message_hub=MessageHub.get_instance(f'{name}_{id(model)}'),
        logger=MMLogger.get_instance('health_test'),
        save_checkpoint=MagicMock(), hooks=hooks, register_hook=hooks.append)


def _train(hook, runner, losses, num_iters, start=True, bias=None):
    """Run ``num_iters`` fake iterations: a forward of the cls layer on a
    fixed input, a backward, and the given logged losses ``losses(it) ->
    dict``; ``bias(it)``, if given, sets the layer's bias first."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3, 3)
    if start:
        hook.before_train(runner)
    layer = runner.model.bbox_head.retina_cls
    for i in range(num_iters):
        hook.before_train_iter(runner, i)
        if bias is not None:
            with torch.no_grad():
                layer.bias.fill_(bias(i))
        layer.zero_grad()
        out = layer(x)
        out.pow(2).mean().backward()
        logged = {k: torch.tensor(v) for k, v in losses(i).items()}
        logged['loss'] = sum(logged.values())
        for h in [hook] + runner.hooks:  # the stop, registered by hook
            h.after_train_iter(runner, i, outputs=logged)
        runner.iter += 1
    return out


def _hook(**kwargs):
    defaults = dict(warmup_iters=0, window=5, smooth=2, stagnation_window=8,
                    score_interval=1)
    return TrainingHealthHook(**dict(defaults, **kwargs))


def test_head_loss_ratios():
    ratios = head_loss_ratios({
        'loss': 5.0, 'acc': 90.0, 'loss_cls': 2.0, 'loss_bbox': 1.0,
        'loss_rpn_cls': 0.3, 'loss_rpn_bbox': 0.1, 's0.loss_cls': 1.0,
        's0.loss_bbox': 4.0})
    assert ratios == pytest.approx(dict(det=2.0, rpn=3.0, s0=0.25))
    # FCOS: centerness counts as regression; YOLOv3: conf as classification.
    assert head_loss_ratios({'loss_cls': 1.0, 'loss_bbox': .5,
                             'loss_centerness': .5}) == {'det': 1.0}
    assert head_loss_ratios({'loss_cls': 1., 'loss_conf': 1., 'loss_xy': .5,
                             'loss_wh': .5}) == {'det': 2.0}
    assert head_loss_ratios({'loss_cls': 1.0, 'loss_bbox': 0.0}) == {}
    # GFL: the distribution focal loss is regression too
    assert head_loss_ratios({'loss_cls': 1.0, 'loss_bbox': 0.25,
                             'loss_dfl': 0.25}) == {'det': 2.0}


def test_fg_scores_layouts():
    # (N=1, A=2 x C=3, H=1, W=2): anchor a, class c at channel a * C + c.
    logits = torch.full((1, 6, 1, 2), -5.0)
    logits[0, 4, 0, 1] = 2.0  # anchor 1, class 1, column 1
    fg = _fg_scores('sigmoid', logits, 3, 2)
    assert fg.shape == (4, )
    assert fg.max() == pytest.approx(torch.sigmoid(torch.tensor(2.0)))
    assert (fg > 0.5).sum() == 1
    # softmax RoI head: background is the last of C + 1 columns.
    rois = torch.tensor([[0.0, 0.0, math.log(2.0)]])
    assert _fg_scores('softmax', rois, 2, 1).item() == pytest.approx(0.5)
    # YOLOv3: objectness is attribute 4 of (5 + C).
    yolo = torch.zeros(1, 2 * 7, 1, 1)
    yolo[0, 4] = 3.0
    assert _fg_scores('yolo', yolo, 2, 2).tolist() == pytest.approx(
        [torch.sigmoid(torch.tensor(3.0)).item(), 0.5])


def test_signals_match_a_manual_computation(tmp_path):
    runner = _runner(tmp_path)
    hook = _hook()
    out = _train(hook, runner, lambda i: dict(loss_cls=2.0, loss_bbox=0.5),
                 3)
    layer = runner.model.bbox_head.retina_cls
    grad_norm = math.sqrt(layer.weight.grad.pow(2).sum() +
                          layer.bias.grad.pow(2).sum())
    hub = runner.message_hub
    assert hub.get_scalar('train/health/grad_norm_retina_cls').current() == \
        pytest.approx(grad_norm, rel=1e-5)
    fg = out.detach().reshape(2, 2, 3, 3, 3).sigmoid().amax(dim=2)
    assert hub.get_scalar('train/health/fg_max').current() == \
        pytest.approx(fg.max().item(), rel=1e-5)
    assert hub.get_scalar('train/health/fg_mean').current() == \
        pytest.approx(fg.mean().item(), rel=1e-5)
    assert hub.get_scalar('train/health/fg_frac').current() == \
        pytest.approx((fg > 0.5).float().mean().item())
    assert hub.get_scalar('train/health/ratio_det').current() == 4.0
    assert hook.detections == []
    hook.after_train(runner)
    assert not layer.weight._backward_hooks


def test_grad_norm_undoes_the_amp_loss_scale(tmp_path):
    runner = _runner(tmp_path)
    runner.optim_wrapper = SimpleNamespace(
        loss_scaler=SimpleNamespace(get_scale=lambda: 4.0))
    _train(_hook(), runner, lambda i: dict(loss_cls=1.0, loss_bbox=1.0), 1)
    layer = runner.model.bbox_head.retina_cls
    grad_norm = math.sqrt(layer.weight.grad.pow(2).sum() +
                          layer.bias.grad.pow(2).sum())
    assert runner.message_hub.get_scalar(
        'train/health/grad_norm_retina_cls').current() == pytest.approx(
            grad_norm / 4, rel=1e-5)


def test_grad_norm_with_an_optim_wrapper_dict(tmp_path):
    """An OptimWrapperDict (one wrapper per model part) has no scale of its
    own: the norm is the backward's, and nothing fails."""
    runner = _runner(tmp_path)
    layer = runner.model.bbox_head.retina_cls
    runner.optim_wrapper = OptimWrapperDict(head=OptimWrapper(
        torch.optim.SGD(layer.parameters(), lr=0.1)))
    _train(_hook(), runner, lambda i: dict(loss_cls=1.0, loss_bbox=1.0), 1)
    grad_norm = math.sqrt(layer.weight.grad.pow(2).sum() +
                          layer.bias.grad.pow(2).sum())
    assert runner.message_hub.get_scalar(
        'train/health/grad_norm_retina_cls').current() == pytest.approx(
            grad_norm, rel=1e-5)


def _logged_grad_norms(runner, backward, iters):
    """The hook's ``grad_norm_retina_cls`` of each of ``iters`` iterations,
    each running ``backward(loss)`` on the same loss of ``retina_cls``."""
    hook = _hook()
    hook.before_train(runner)
    layer = runner.model.bbox_head.retina_cls
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    norms = []
    for i in range(iters):
        hook.before_train_iter(runner, i)
        backward(layer(x).pow(2).mean())
        hook.after_train_iter(runner, i, outputs=dict(
            loss=torch.tensor(2.0), loss_cls=torch.tensor(1.0),
            loss_bbox=torch.tensor(1.0)))
        norms.append(runner.message_hub.get_scalar(
            'train/health/grad_norm_retina_cls').current())
        runner.iter += 1
    return layer, x, norms


def test_grad_norm_is_per_iteration_under_gradient_accumulation(tmp_path):
    """Without zero_grad between iterations ``.grad`` sums the gradients
    (1x, 2x, 3x); the logged norm is each iteration's own."""
    layer, _, norms = _logged_grad_norms(
        _runner(tmp_path), lambda loss: loss.backward(), 3)
    total = math.sqrt(layer.weight.grad.pow(2).sum() +
                      layer.bias.grad.pow(2).sum())
    assert norms == pytest.approx([total / 3] * 3, rel=1e-5)


def test_grad_norm_undoes_the_accumulation_factor(tmp_path):
    """OptimWrapper(accumulative_counts=2) divides each loss by 2, and the
    last iteration of 5 by its remainder, 1: the same gradient gives the
    same norm every iteration."""
    from mmengine.optim import OptimWrapper
    runner = _runner(tmp_path)
    layer = runner.model.bbox_head.retina_cls
    runner.optim_wrapper = OptimWrapper(
        torch.optim.SGD(layer.parameters(), lr=0.0), accumulative_counts=2)
    runner.optim_wrapper.initialize_count_status(layer, 0, 5)
    layer, x, norms = _logged_grad_norms(
        runner, runner.optim_wrapper.update_params, 5)
    layer.zero_grad()
    layer(x).pow(2).mean().backward()
    full = math.sqrt(layer.weight.grad.pow(2).sum() +
                     layer.bias.grad.pow(2).sum())
    assert norms == pytest.approx([full] * 5, rel=1e-5)


def test_layers_of_one_name_get_a_key_per_stage():
    keys = TrainingHealthHook._layer_keys([
        'rpn_head.rpn_cls', 'roi_head.bbox_head.0.fc_cls',
        'roi_head.bbox_head.1.fc_cls', 'roi_head.bbox_head.2.fc_cls'])
    assert list(keys.values()) == ['rpn_cls', 'fc_cls_s0', 'fc_cls_s1',
                                   'fc_cls_s2']


def test_healthy_run_raises_nothing(tmp_path):
    runner = _runner(tmp_path)
    hook = _hook()
    _train(hook, runner, lambda i: dict(loss_cls=1 / (1 + i),
                                        loss_bbox=0.5 / (1 + i)), 40)
    assert hook.detections == []


def test_a_plateau_after_the_loss_fell_is_no_stagnation(tmp_path):
    # Falls 2% below its start (2.0) in the 8 iterations after warm-up,
    # then flat for 10 stagnation windows, as a healthy run's late plateau.
    runner = _runner(tmp_path)
    hook = _hook(patterns=['stagnation'])
    _train(hook, runner, lambda i: dict(loss_cls=1.0 - 0.005 * min(i, 8),
                                        loss_bbox=1.0), 90)
    assert hook.detections == []
    # 0.4% is not enough
    runner = _runner(tmp_path)
    hook = _hook(patterns=['stagnation'])
    _train(hook, runner, lambda i: dict(loss_cls=1.0 - 0.001 * min(i, 8),
                                        loss_bbox=1.0), 90)
    assert [d['iter'] for d in hook.detections] == [10]
    assert 'since iter 2 (the first judged after the warm-up) is not 1% ' \
        'below' in hook.detections[0]['message']


def test_stagnation_is_judged_only_in_a_run_started_in_the_warmup(
        tmp_path):
    flat = lambda i: dict(loss_cls=1.0, loss_bbox=1.0)  # noqa: E731
    # resumed past the warm-up (iteration 20): the level at its end is
    # unknown
    runner = _runner(tmp_path)
    runner.iter = 1000
    hook = _hook(patterns=['stagnation'], warmup_iters=20)
    _train(hook, runner, flat, 40)
    assert hook.detections == []
    # resumed late in the warm-up: judged from the first full smoothing
    # window of 5, iteration 23, 8 iterations on
    runner = _runner(tmp_path)
    runner.iter = 18
    hook = _hook(patterns=['stagnation'], warmup_iters=20, smooth=5)
    _train(hook, runner, flat, 20)
    assert [d['iter'] for d in hook.detections] == [31]


def test_a_nan_first_does_not_hide_stagnation(tmp_path):
    runner = _runner(tmp_path)
    hook = _hook()
    _train(hook, runner, lambda i: dict(
        loss_cls=math.nan if i == 0 else 1.0, loss_bbox=1.0), 20)
    assert [(d['pattern'], d['iter']) for d in hook.detections] == [
        ('non_finite', 1), ('stagnation', 11)]


@pytest.mark.parametrize('pattern,losses,bias,first_iter', [
    # smooth=2: the first smoothed loss at iter 2; NaN is caught at once.
    ('non_finite', lambda i: dict(loss_cls=math.nan if i == 6 else 1 / (
        1 + i), loss_bbox=1 / (1 + i)), 0.0, 7),
    # 2 / (1 + i) until iter 10, then 20: smoothed (0.2 + 20) / 2 > 4 x
    # the minimum (0.22 + 0.2) / 2.
    ('divergence', lambda i: dict(loss_cls=1 / (1 + i) if i < 10 else 10.0,
                                  loss_bbox=1 / (1 + i) if i < 10 else 10.0),
     0.0, 11),
    # flat: the smoothed loss at iter 10 (8 after the first judged one,
    # iter 2) has not fallen 1% below its level at iter 2.
    ('stagnation', lambda i: dict(loss_cls=1.0, loss_bbox=1.0), 0.0, 10),
    ('regression_domination', lambda i: dict(loss_cls=1e-3 / (1 + i),
                                             loss_bbox=1 / (1 + i)), 0.0, 5),
    ('classification_domination', lambda i: dict(loss_cls=1e3 / (1 + i),
                                                 loss_bbox=1 / (1 + i)), 0.0,
     5),
    # bias -10: every foreground score ~ sigmoid(-10) = 4.5e-5 < 1e-3.
    ('collapse', lambda i: dict(loss_cls=1 / (1 + i), loss_bbox=1 / (1 + i)),
     -10.0, 5),
])
def test_each_pattern_is_named(tmp_path, pattern, losses, bias, first_iter):
    runner = _runner(tmp_path, bias=bias)
    hook = _hook()
    _train(hook, runner, losses, 20)
    # Others may follow (a diverged loss also stagnates), never precede.
    found = hook.detections[0]
    assert found['pattern'] == pattern
    assert found['iter'] == first_iter
    assert f'iter {first_iter}' in found['message']
    assert REMEDIES[pattern][0] in found['message']


def test_the_rpn_has_wider_ratio_bounds(tmp_path):
    # cls/reg 20: a healthy sampled RPN early on, a dominated dense head.
    runner = _runner(tmp_path)
    hook = _hook()
    _train(hook, runner, lambda i: {
        'loss_rpn_cls': 20 / (1 + i), 'loss_rpn_bbox': 1 / (1 + i),
        'loss_cls': 20 / (1 + i), 'loss_bbox': 1 / (1 + i)}, 6)
    assert [d['pattern'] for d in hook.detections] == [
        'classification_domination']
    assert "head 'det'" in hook.detections[0]['message']
    runner = _runner(tmp_path)
    hook = _hook(head_ratio_ranges=dict(rpn=(0.05, 5.0)))
    _train(hook, runner, lambda i: {
        'loss_rpn_cls': 20 / (1 + i), 'loss_rpn_bbox': 1 / (1 + i)}, 6)
    assert "head 'rpn'" in hook.detections[0]['message']


def test_head_ratio_ranges_add_to_the_rpn_default(tmp_path):
    # bounds for 'det' keep the RPN's wide default: ratio 20 is healthy there
    runner = _runner(tmp_path)
    hook = _hook(head_ratio_ranges=dict(det=(0.05, 50.0)))
    _train(hook, runner, lambda i: {
        'loss_rpn_cls': 20 / (1 + i), 'loss_rpn_bbox': 1 / (1 + i),
        'loss_cls': 20 / (1 + i), 'loss_bbox': 1 / (1 + i)}, 6)
    assert hook.detections == []
    assert hook.head_ratio_ranges == dict(rpn=(0.01, 100.0),
                                          det=(0.05, 50.0))


def test_head_ratio_ranges_for_a_head_the_model_does_not_log(tmp_path):
    # a Faster R-CNN's RoI head logs as 'det': 'roi' bounds would do nothing
    runner = _runner(tmp_path)
    hook = _hook(head_ratio_ranges=dict(roi=(0.5, 2.0)))
    with pytest.raises(ValueError, match=r"names \['roi'\], but this model "
                       r"logs the heads \['det', 'rpn'\]"):
        _train(hook, runner, lambda i: {
            'loss_rpn_cls': 1.0, 'loss_rpn_bbox': 1.0, 'loss_cls': 1.0,
            'loss_bbox': 1.0}, 1)


def test_collapse_names_the_sampling_free_remedy(tmp_path):
    runner = _runner(tmp_path, bias=-10.0)
    hook = _hook(patterns=['collapse'])
    _train(hook, runner, lambda i: dict(loss_cls=1.0, loss_bbox=1.0), 6)
    assert 'enable OptimalBiasInit: configs/retinanet_ce_obi.py' in \
        hook.detections[0]['message']


def test_two_stage_scores_per_layer_and_a_roi_head_collapse(tmp_path):
    """A two-stage stand-in: a healthy sigmoid ``rpn_cls`` and a softmax
    ``fc_cls`` whose background logit dominates. Each layer logs its own
    scores (suffixed keys), and the RoI classifier's collapse is named."""
    model = nn.Module()
    model.rpn_head = _Head(num_classes=1, num_anchors=3)
    model.rpn_head.rpn_cls = model.rpn_head.retina_cls
    del model.rpn_head.retina_cls
    model.roi_head = nn.Module()
    model.roi_head.bbox_head = bbox_head = nn.Module()
    bbox_head.num_classes = 3
    bbox_head.loss_cls = SimpleNamespace(use_sigmoid=False)
    bbox_head.fc_cls = nn.Linear(8, 4)  # 3 classes, background last
    with torch.no_grad():
        bbox_head.fc_cls.bias.copy_(torch.tensor([0., 0., 0., 20.]))
    runner = _runner(tmp_path, name='two_stage')
    runner.model = model
    hook = _hook(patterns=['collapse'])
    hook.before_train(runner)
    feats = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    rois = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    for i in range(6):
        hook.before_train_iter(runner, i)
        rpn = model.rpn_head.rpn_cls(feats)
        roi = bbox_head.fc_cls(rois)
        (rpn.pow(2).mean() + roi.pow(2).mean()).backward()
        hook.after_train_iter(runner, i, outputs=dict(
            loss=torch.tensor(2.), loss_rpn_cls=torch.tensor(.5),
            loss_rpn_bbox=torch.tensor(.5), loss_cls=torch.tensor(.5),
            loss_bbox=torch.tensor(.5)))
        runner.iter += 1
    hub = runner.message_hub
    assert hub.get_scalar('train/health/fg_max_rpn_cls').current() == \
        pytest.approx(rpn.detach().sigmoid().max().item(), rel=1e-5)
    assert hub.get_scalar('train/health/fg_max_fc_cls').current() == \
        pytest.approx(1 - roi.detach().softmax(-1)[:, 3].min().item(),
                      abs=1e-9)
    assert 'train/health/fg_max' not in hub.log_scalars
    assert [d['pattern'] for d in hook.detections] == ['collapse']
    assert 'max foreground score of fc_cls below' in \
        hook.detections[0]['message']


def test_a_low_but_rising_score_is_no_collapse(tmp_path):
    # As after OptimalBiasInit: scores start near a 1e-5 prior and rise.
    runner = _runner(tmp_path)
    hook = _hook()
    _train(hook, runner, lambda i: dict(loss_cls=1 / (1 + i),
                                        loss_bbox=1 / (1 + i)), 20,
           bias=lambda i: -13.0 + 0.1 * i)
    assert runner.message_hub.get_scalar(
        'train/health/fg_max').current() < 1e-3
    assert hook.detections == []


def test_nothing_but_non_finite_during_warmup(tmp_path):
    runner = _runner(tmp_path, bias=-10.0)
    hook = _hook(warmup_iters=15)
    # Collapsed and flat from the start, but judged only from iter 15 + 5;
    # a non-finite loss is named at once, warm-up or not.
    _train(hook, runner, lambda i: dict(
        loss_cls=math.nan if i == 3 else 1.0, loss_bbox=1.0), 19)
    assert [(d['pattern'], d['iter']) for d in hook.detections] == [
        ('non_finite', 4)]
    hook.detections.clear()
    _train(hook, runner, lambda i: dict(loss_cls=1.0, loss_bbox=1.0), 2,
           start=False)
    assert [d['pattern'] for d in hook.detections] == ['collapse']


def test_a_resumed_run_judges_collapse_on_a_full_window(tmp_path):
    """Resumed at iteration 1000 (past the warm-up) with empty windows:
    window 20 with a score every 5 iterations needs 4 samples, so collapse
    is named at iteration 1016, not from the first 2 samples (1006)."""
    runner = _runner(tmp_path, bias=-10.0)
    runner.iter = 1000
    hook = _hook(window=20, score_interval=5, patterns=['collapse'])
    _train(hook, runner, lambda i: dict(loss_cls=1.0, loss_bbox=1.0), 20)
    assert hook.detections[0]['iter'] == 1016
    assert 'in all 4 samples' in hook.detections[0]['message']


def _rising(i):
    """1 until iteration 100, then a linear rise to 5 at iteration 200."""
    loss = 1.0 if i < 100 else 1.0 + 4.0 * (i - 99) / 100
    return dict(loss_cls=loss / 2, loss_bbox=loss / 2)


@pytest.mark.parametrize('resume,expected', [(True, [178]), (False, [])])
def test_resume_judges_as_the_uninterrupted_run(tmp_path, resume, expected):
    """A checkpoint at iteration 150 carries the judging state: --resume
    names the divergence at 178 as the uninterrupted run does (its minimum,
    1, is from before the checkpoint); a fine-tune (load_from) starts
    afresh, its minimum already high, and names none."""
    kwargs = dict(smooth=5, patterns=['divergence'])
    whole = _hook(**kwargs)
    _train(whole, _runner(tmp_path, name='whole'), _rising, 200)
    assert [d['iter'] for d in whole.detections] == [178]

    runner = _runner(tmp_path, name=f'first{resume}')
    first = _hook(**kwargs)
    _train(first, runner, _rising, 150)
    ckpt = {}
    first.before_save_checkpoint(runner, ckpt)
    runner._resume = resume
    second = _hook(**kwargs)
    second.after_load_checkpoint(runner, ckpt)
    _train(second, runner, lambda i: _rising(i + 150), 50)
    assert [d['iter'] for d in second.detections] == expected
    # lists and numbers only: a weights-only torch.load reads them
    path = tmp_path / 'state.pth'
    torch.save(ckpt, path)
    assert torch.load(path) == ckpt


def test_the_stop_checkpoint_leaves_the_state_out(tmp_path):
    """Resumed from the stop checkpoint, after a fix, a run is judged
    afresh: the diverged losses before the stop would stop it again."""
    runner = _runner(tmp_path)
    saved = []
    runner.save_checkpoint = lambda *a, **k: saved.append(
        hook.before_save_checkpoint(runner, ckpt) or dict(ckpt))
    ckpt = {}
    hook = _hook(action='stop', smooth=5, patterns=['divergence'])
    with pytest.raises(TrainingFailureError, match='iter 178: divergence'):
        _train(hook, runner, _rising, 200)
    assert saved == [{}]
    hook.before_save_checkpoint(runner, ckpt)  # a regular checkpoint
    assert ckpt['training_health']['best'] == pytest.approx(1.0)


def test_warmup_read_from_the_lr_schedulers(tmp_path):
    runner = _runner(tmp_path)
    optimizer = torch.optim.SGD(runner.model.parameters(), lr=0.1)
    runner.param_schedulers = [LinearLR(optimizer, start_factor=0.001,
                                        by_epoch=False, begin=0, end=500)]
    hook = TrainingHealthHook()
    hook.before_train(runner)
    assert hook.warmup_iters == 500


def test_warmup_ignores_later_and_endless_schedulers(tmp_path):
    """Only a warm-up from iteration 0 with an end counts; the schedulers
    of several optimizers (a dict of lists) are all read."""
    from mmengine.optim.scheduler import MultiStepLR
    runner = _runner(tmp_path)
    optimizer = torch.optim.SGD(runner.model.parameters(), lr=0.1)
    runner.param_schedulers = dict(
        backbone=[LinearLR(optimizer, by_epoch=False, begin=0, end=200),
                  MultiStepLR(optimizer, by_epoch=False, milestones=[900],
                              begin=0, end=1000)],
        head=[LinearLR(optimizer, by_epoch=False, begin=0, end=300),
              # a second warm-up later in the run is not the first one
              LinearLR(optimizer, by_epoch=False, begin=500, end=900)])
    hook = TrainingHealthHook()
    hook.before_train(runner)
    assert hook.warmup_iters == 300
    runner.param_schedulers = [LinearLR(optimizer, by_epoch=False, begin=0)]
    runner.logger = MagicMock()
    hook = TrainingHealthHook()
    hook.before_train(runner)  # end=INF: a whole-run ramp, no warm-up
    assert hook.warmup_iters == 0
    assert 'no LR warm-up' in runner.logger.warning.call_args.args[0]


def test_warmup_from_other_schedulers(tmp_path):
    from mmdet.engine.schedulers import QuadraticWarmupLR
    runner = _runner(tmp_path)
    runner.train_dataloader = [None] * 7  # 7 iterations per epoch
    optimizer = torch.optim.SGD(runner.model.parameters(), lr=0.1)
    from mmengine.optim.scheduler import ConstantLR
    for scheduler, expected in (
            (QuadraticWarmupLR(optimizer, by_epoch=False, end=300), 300),
            (ConstantLR(optimizer, factor=0.25, by_epoch=False, end=40), 40),
            # epochs, converted with the dataloader's length
            (LinearLR(optimizer, start_factor=0.1, by_epoch=True, end=2),
             14),
            # schedules from 0 that do not raise the LR are no warm-up: a
            # LinearLR decay over the run would keep every pattern unjudged
            (LinearLR(optimizer, start_factor=1.0, end_factor=0.1,
                      by_epoch=False, end=1000), 0),
            (ConstantLR(optimizer, factor=1.0, by_epoch=False, end=40), 0)):
        runner.param_schedulers = [scheduler]
        hook = TrainingHealthHook()
        hook.before_train(runner)
        assert hook.warmup_iters == expected
    # no warm-up: judged from the start, with a warning saying so
    runner.param_schedulers = []
    runner.logger = MagicMock()
    hook = TrainingHealthHook()
    hook.before_train(runner)
    assert hook.warmup_iters == 0
    assert 'TrainingHealthHook: no LR warm-up starting at iteration 0' in \
        runner.logger.warning.call_args.args[0]


def test_stop_saves_a_checkpoint_and_raises(tmp_path):
    runner = _runner(tmp_path)
    hook = _hook(action='stop')
    with pytest.raises(TrainingFailureError, match='iter 3: non-finite'):
        _train(hook, runner, lambda i: dict(
            loss_cls=math.inf if i == 2 else 1.0, loss_bbox=1.0), 5)
    # by iteration: --resume continues after iteration 3
    runner.save_checkpoint.assert_called_once_with(
        str(tmp_path), 'health_stop_iter_3.pth', by_epoch=False)
    # the error skips after_train: the model's hooks are off all the same
    layer = runner.model.bbox_head.retina_cls
    assert not layer._forward_hooks
    assert all(not p._backward_hooks for p in layer.parameters())
    # registered once, however often training starts
    hook.before_train(runner)
    assert len(runner.hooks) == 1


class _NaNAt(BaseModel):
    """A one-weight model whose loss is NaN at iteration ``bad`` (1-based)."""

    def __init__(self, bad):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.bad, self.calls = bad, 0

    def forward(self, inputs, data_samples=None, mode='tensor'):
        self.calls += 1
        loss = self.w.sum() * (math.nan if self.calls == self.bad else 1.0)
        return dict(loss=loss)


def test_stop_checkpoint_holds_the_stepped_schedulers(tmp_path):
    """In a real runner the stop runs after ParamSchedulerHook, as
    CheckpointHook does: the checkpoint of iteration 3 holds the LR
    schedule after 3 steps, so --resume continues it where it was; and
    LoggerHook has logged iteration 3."""
    runner = Runner(
        model=_NaNAt(bad=3), work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=[dict(inputs=torch.zeros(1))] * 8, batch_size=1,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=6),
        log_processor=dict(by_epoch=False),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        param_scheduler=dict(type='LinearLR', start_factor=0.1,
                             by_epoch=False, begin=0, end=6),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook',
                                           interval=100, by_epoch=False)),
        custom_hooks=[TrainingHealthHook(action='stop', warmup_iters=0)],
        experiment_name='health_stop_schedulers')
    with pytest.raises(TrainingFailureError, match='iter 3: non-finite'):
        runner.train()
    ckpt = torch.load(tmp_path / 'health_stop_iter_3.pth')
    assert ckpt['meta']['iter'] == 3
    # a bare --resume (mmengine's auto-resume) finds it
    from mmengine.runner import find_latest_checkpoint
    assert find_latest_checkpoint(str(tmp_path)) == str(
        tmp_path / 'health_stop_iter_3.pth')
    assert ckpt['param_schedulers'][0]['last_step'] == 3
    log = (Path(runner.log_dir) / f'{runner.timestamp}.log').read_text()
    assert 'Iter(train) [3/6]' in log and 'loss: nan' in log


_RANK_STOPS = """
import json, logging, math, os, sys, time
from types import SimpleNamespace
import torch, torch.distributed as dist
from mmengine.evaluator import BaseMetric
from mmengine.logging import MessageHub, MMLogger
from torch import nn
from mmdet_freebies.engine.hooks.training_health_hook import (
    TrainingFailureError, TrainingHealthHook)

dist.init_process_group('gloo')
rank = dist.get_rank()
model = nn.Module()
model.bbox_head = nn.Module()
saved = []
hooks = []


def save_checkpoint(out_dir, filename, by_epoch=True):
    saved.append(filename)
    if rank == 0:  # as mmengine's @master_only save, and a slow write
        time.sleep(1.0)
        open(filename, 'w').close()


runner = SimpleNamespace(
    model=model, iter=0, work_dir='.', param_schedulers=[],
    message_hub=MessageHub.get_instance('rank_stop'),
    logger=MMLogger.get_instance('rank_stop'),
    save_checkpoint=save_checkpoint, hooks=hooks, register_hook=hooks.append)
levels = []


class Levels(logging.Handler):

    def emit(self, record):
        levels.append(record.levelname)


runner.logger.addHandler(Levels())
hook = TrainingHealthHook(action='stop', warmup_iters=0)
hook.before_train(runner)
result = dict(rank=rank, levels=levels)
try:
    for i in range(6):
        hook.before_train_iter(runner, i)
        bad = rank == 1 and i == 2  # only rank 1 sees a NaN, at iter 3
        for h in [hook] + hooks:  # the stop, registered by hook
            h.after_train_iter(runner, i, outputs=dict(
                loss=torch.tensor(math.nan if bad else 1.0)))
        runner.iter += 1
except TrainingFailureError as e:
    result.update(iter=runner.iter + 1, message=str(e), saved=saved,
                  written=os.path.exists(saved[0]))
json.dump(result, open(sys.argv[1] + str(rank), 'w'))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ranks_stop_together(tmp_path):
    """2 gloo processes, a NaN on rank 1 only: both stop at iteration 3
    (a rank stopping alone would hang the other in DDP's all-reduce), and
    rank 0 says another rank found it. Rank 1 raises only after rank 0
    has written the checkpoint: torchrun kills the other ranks when one
    exits with an error."""
    results = json_per_rank(_RANK_STOPS, tmp_path, cwd=tmp_path)
    assert [r.get('iter') for r in results] == [3, 3]
    assert [r['saved'] for r in results] == [['health_stop_iter_3.pth']] * 2
    assert [r['written'] for r in results] == [True, True]
    assert 'another rank detected non-finite loss' in results[0]['message']
    # mmengine's logger shows ranks > 0 only ERROR records: the detection
    # is one there, a warning on rank 0
    assert results[1]['levels'].count('ERROR') == 1
    assert 'ERROR' not in results[0]['levels']
    assert 'non-finite loss=nan' in results[1]['message']


_RANK_STATES = """
import json, sys
from types import SimpleNamespace
import torch, torch.distributed as dist
from mmengine.hooks import CheckpointHook
from mmengine.evaluator import BaseMetric
from mmengine.logging import MessageHub, MMLogger
from torch import nn
from mmdet_freebies.engine.hooks.training_health_hook import (
    TrainingHealthHook)

dist.init_process_group('gloo')
rank = dist.get_rank()


def make_runner(name, resume=False):
    model = nn.Module()
    model.bbox_head = nn.Module()
    return SimpleNamespace(
        model=model, iter=0, epoch=0, max_iters=6, work_dir='.',
        param_schedulers=[], _resume=resume,
        message_hub=MessageHub.get_instance(name),
        logger=MMLogger.get_instance(name),
        hooks=[CheckpointHook(interval=3, by_epoch=False)])


first = make_runner('first')
hook = TrainingHealthHook(warmup_iters=0, window=2, smooth=2,
                          score_interval=1)
hook.before_train(first)
ckpt = {}
for _ in range(3):
    hook.before_train_iter(first, first.iter)
    # each rank its own losses
    loss = torch.tensor(1.0 + rank + 0.1 * first.iter)
    hook.after_train_iter(first, first.iter, outputs=dict(loss=loss))
    # then CheckpointHook.after_train_iter saves at iteration 3, on the
    # master only, before the loop counts the iteration
    if first.iter == 2 and rank == 0:
        hook.before_save_checkpoint(first, ckpt)
        torch.save(ckpt, sys.argv[1] + 'ckpt.pth')
    first.iter += 1
at_save = hook._get_state()
dist.barrier()
ckpt = torch.load(sys.argv[1] + 'ckpt.pth')  # weights-only
resumed_runner = make_runner('resumed', resume=True)
resumed_runner.iter = 3
resumed = TrainingHealthHook(warmup_iters=0, window=2, smooth=2,
                          score_interval=1)
resumed.after_load_checkpoint(resumed_runner, ckpt)
resumed.before_train(resumed_runner)
json.dump(dict(at_save=at_save, resumed=resumed._get_state(),
               keys=sorted(ckpt)), open(sys.argv[1] + str(rank), 'w'))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_each_rank_resumes_with_its_own_state(tmp_path):
    """2 gloo processes with different losses: the ranks gather their
    states just before the CheckpointHook save (rank 0 alone writes the
    checkpoint), and on --resume each rank takes its own, not rank 0's."""
    results = json_per_rank(_RANK_STATES, tmp_path, cwd=tmp_path)
    assert results[0]['at_save'] != results[1]['at_save']
    for r in results:
        assert r['resumed'] == r['at_save']
    assert 'training_health_per_rank' in results[0]['keys']


def test_a_checkpoint_of_other_ranks_resumes_with_rank_0s(tmp_path):
    """Resumed on one process, a 2-rank checkpoint gives rank 0's state,
    with a warning; a checkpoint without per-rank states gives its one."""
    runner = _runner(tmp_path, name='other_ranks')
    runner._resume = True
    ckpt = dict(training_health=dict(_STATE, best=1.0),
                training_health_per_rank=[dict(_STATE, best=1.0),
                                          dict(_STATE, best=2.0)])
    hook = _hook()
    with pytest.warns(UserWarning, match='states of 2 ranks and this run '
                      "has 1: every rank resumes with rank 0's"):
        hook.after_load_checkpoint(runner, ckpt)
    assert hook._loaded['best'] == 1.0
    del ckpt['training_health_per_rank']
    hook.after_load_checkpoint(runner, ckpt)
    assert hook._loaded['best'] == 1.0
    runner._resume = False  # load_from: a new run
    hook.after_load_checkpoint(runner, ckpt)
    assert hook._loaded is None


class _TinyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs)
        if mode == 'loss':
            return dict(loss_cls=self.fc(x).pow(2).mean() + 1,
                        loss_bbox=self.fc(x).abs().mean() + 1)
        return [dict(value=float(self.fc(x).sum()))]


class _Improving(BaseMetric):
    """A metric that improves at every validation: save_best re-saves."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def process(self, data_batch, data_samples):
        self.results.append(1)

    def compute_metrics(self, results):
        self.calls += 1
        return dict(acc=float(self.calls))


@pytest.mark.parametrize('by_epoch', [False, True])
def test_every_checkpoint_of_a_ddp_run_holds_each_ranks_state(
        tmp_path, monkeypatch, by_epoch):
    """A real Runner whose CheckpointHook saves by interval, at the end and,
    with save_best, again after an improving validation (which rewrites the
    latest checkpoint, also in an epoch not due): every regular checkpoint
    holds every rank's state. The world size is faked to 2 in the hook."""
    from mmdet_freebies.engine.hooks import training_health_hook as module
    monkeypatch.setattr(module, 'get_world_size', lambda: 2)
    monkeypatch.setattr(module, 'all_gather_object',
                        lambda state: [state, dict(state, best=-1.0)])
    data = [dict(inputs=torch.randn(2)) for _ in range(8)]
    loader = dict(dataset=data, batch_size=2, collate_fn=dict(
        type='pseudo_collate'), sampler=dict(type='DefaultSampler',
                                             shuffle=False))
    loop = dict(type='EpochBasedTrainLoop', max_epochs=5, val_interval=1) \
        if by_epoch else dict(type='IterBasedTrainLoop', max_iters=4,
                              val_interval=2)
    runner = Runner(
        model=_TinyModel(), work_dir=str(tmp_path), train_dataloader=loader,
        val_dataloader=loader, val_evaluator=[_Improving()], val_cfg=dict(),
        train_cfg=loop, optim_wrapper=dict(optimizer=dict(type='SGD',
                                                          lr=0.01)),
        default_hooks=dict(checkpoint=dict(
            type='CheckpointHook', by_epoch=by_epoch, interval=2,
            save_best='acc', rule='greater')),
        custom_hooks=[dict(type='TrainingHealthHook', warmup_iters=0)],
        default_scope='mmdet')
    runner.train()
    names = sorted(p.name for p in tmp_path.glob('*.pth')
                   if not p.name.startswith('best'))
    # epoch 3 (not due at interval 2) is saved by save_best alone; iter_2
    # is rewritten by it after validation, the iteration already counted
    assert names == (['epoch_2.pth', 'epoch_3.pth', 'epoch_4.pth',
                      'epoch_5.pth'] if by_epoch else
                     ['iter_2.pth', 'iter_4.pth'])
    for name in names:
        ckpt = torch.load(tmp_path / name)
        assert [s['best'] for s in ckpt['training_health_per_rank']][1] == \
            -1.0, name


def test_a_one_state_checkpoint_on_two_ranks_warns(tmp_path, monkeypatch):
    from mmdet_freebies.engine.hooks import training_health_hook as module
    monkeypatch.setattr(module, 'get_world_size', lambda: 2)
    runner = _runner(tmp_path, name='one_state')
    runner._resume = True
    hook = _hook()
    with pytest.warns(UserWarning, match='holds one judging state .* all 2 '
                      'ranks resume with it'):
        hook.after_load_checkpoint(runner, dict(training_health=_STATE))
    assert hook._loaded == _STATE


_STATE = dict(losses=[], best=math.inf, start=None, stagnation_open=True,
              fg_max={}, ratios={})


def test_bad_arguments():
    with pytest.raises(ValueError, match="'warn' or 'stop'"):
        TrainingHealthHook(action='exit')
    with pytest.raises(ValueError, match='unknown patterns'):
        TrainingHealthHook(patterns=['collaps'])
    with pytest.raises(ValueError, match='window'):
        TrainingHealthHook(window=0)
    with pytest.raises(ValueError, match='ratio_range'):
        TrainingHealthHook(ratio_range=(10, 1))
    with pytest.raises(ValueError, match="head_ratio_ranges\\['rpn'\\]"):
        TrainingHealthHook(head_ratio_ranges=dict(rpn=(0, 1)))
    with pytest.raises(ValueError, match="ratio_range must .* got "
                       "\\(0.05, '5'\\)"):
        TrainingHealthHook(ratio_range=(0.05, '5'))
    with pytest.raises(ValueError, match="patterns must be a list of names, "
                       "got 'collapse'"):
        TrainingHealthHook(patterns='collapse')
    with pytest.raises(TypeError, match='patterns must be a list of names, '
                       r'got patterns=None; \[\] judges nothing'):
        TrainingHealthHook(patterns=None)
    with pytest.warns(UserWarning, match='nothing is judged'):
        TrainingHealthHook(patterns=[])
    for key, value in (('divergence_factor', 1.0), ('divergence_factor', '4'),
                       ('divergence_factor', math.inf),
                       ('stagnation_rel', 0.0),
                       ('stagnation_rel', 1.0), ('collapse_score', 0.0)):
        with pytest.raises(ValueError, match=f'{key}={value!r}'):
            TrainingHealthHook(**{key: value})
    for value in (-1, True):
        with pytest.raises(ValueError, match=f'warmup_iters must be .* '
                           f'{value!r}'):
            TrainingHealthHook(warmup_iters=value)
    with pytest.raises(ValueError, match='smooth must be a positive int, '
                       'got True'):
        TrainingHealthHook(smooth=True)
    # one score sample per window: collapse could never be judged
    with pytest.raises(ValueError, match='score_interval=30 .* window=50'):
        TrainingHealthHook(score_interval=30)
    TrainingHealthHook(score_interval=30, patterns=['divergence'])


@pytest.mark.parametrize('config, expected', [
    ('retinanet_fl.py', {'bbox_head.retina_cls': ('sigmoid', 4, 9)}),
    ('fcos_fl.py', {'bbox_head.conv_cls': ('sigmoid', 4, 1)}),
    ('faster_rcnn_biased.py', {'rpn_head.rpn_cls': ('sigmoid', 1, 3),
                               'roi_head.bbox_head.fc_cls': ('softmax', 4,
                                                             1)}),
    ('yolov3_baseline.py', {'bbox_head.convs_pred': ('yolo', 4, 3)}),
])
def test_classification_layers_of_the_pack_s_detectors(toy_cfg, config,
                                                       expected):
    """The kind of score each head's classifier gives (sigmoid, softmax with
    a background column, YOLOv3's objectness + classes), read from the real
    mmdet heads."""
    from mmdet.registry import MODELS
    model = MODELS.build(toy_cfg(config).model)
    found = {path: info for path, (_, info) in
             TrainingHealthHook._find_cls_layers(model).items()}
    assert found == expected


def test_the_first_judged_iteration_follows_the_warmup(tmp_path):
    """warmup_iters=4: iterations 0-3 are not judged; flat losses are
    stagnation from iteration 5 on, reported once its window is full."""
    runner = _runner(tmp_path, name='warmup_edge')
    hook = _hook(warmup_iters=4, patterns=['stagnation'])
    _train(hook, runner, lambda i: dict(loss_cls=1.0, loss_bbox=1.0), 20)
    assert [d['iter'] for d in hook.detections] == [13]
    assert 'since iter 5 ' in hook.detections[0]['message']


def test_the_ratio_window_holds_exactly_window_samples(tmp_path):
    """window=4 (smooth=2): the cls/box ratio jumps from 1 to 100 at
    iteration 4 and the window's median crosses the threshold at 6; a
    window of one sample more would report it at 7."""
    runner = _runner(tmp_path, name='window_edge')
    hook = _hook(window=4, patterns=['classification_domination'])
    _train(hook, runner, lambda i: dict(
        loss_cls=1.0 if i < 4 else 100.0, loss_bbox=1.0), 10)
    assert [d['iter'] for d in hook.detections] == [6]


def test_a_stale_gather_is_not_saved(tmp_path, monkeypatch):
    """The ranks' states gathered for one checkpoint are not written into
    a later one the hook did not gather for."""
    from mmengine.hooks import CheckpointHook

    from mmdet_freebies.engine.hooks import training_health_hook as module
    runner = _runner(tmp_path, name='stale')
    hook = _hook(patterns=[])
    _train(hook, runner, lambda i: dict(loss_cls=1.0, loss_bbox=1.0), 3)
    monkeypatch.setattr(module, 'get_world_size', lambda: 2)
    monkeypatch.setattr(module, 'all_gather_object', lambda s: [s, s])
    runner.hooks = [CheckpointHook(interval=3, by_epoch=False,
                                   save_last=False)]
    runner.iter = 2  # after the 3rd iteration: a checkpoint is due
    hook._gather_for_checkpoint(runner, 'iter')
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    assert 'training_health_per_rank' in checkpoint
    runner.iter = 4
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    assert 'training_health_per_rank' not in checkpoint
