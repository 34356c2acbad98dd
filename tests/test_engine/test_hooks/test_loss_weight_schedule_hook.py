import math
import warnings
from types import SimpleNamespace

import pytest
from mmengine.logging import MessageHub
from torch import nn

from mmdet.models.losses import L1Loss
from mmdet.registry import HOOKS
from mmdet_freebies.engine.hooks.guided_loss_scaling import \
    GuidedLossScaling
from mmdet_freebies.engine.hooks.loss_weight_schedule_hook import (
    LossWeightScheduleHook, _check_schedule, scheduled_weight)

from helpers import repo_config

LINEAR = dict(loss='bbox_head.loss_bbox', policy='linear', begin=10, end=20,
              from_weight=0.1, to_weight=1.0)


def _runner(iters_per_epoch=8):
    model = nn.Module()
    model.bbox_head = nn.Module()
    model.bbox_head.loss_bbox = L1Loss(loss_weight=1.0)
    return SimpleNamespace(model=model, iter=0, hooks=[],
                           train_dataloader=[None] * iters_per_epoch,
                           message_hub=MessageHub.get_instance('lw_test'))


@pytest.mark.parametrize('policy,t,expected', [
    ('linear', 0, 0.1), ('linear', 10, 0.1), ('linear', 15, 0.55),
    ('linear', 20, 1.0), ('linear', 99, 1.0),
    ('cosine', 15, 0.55),
    # (1 - cos(pi / 4)) / 2 = 0.146447 of the way from 0.1 to 1.0
    ('cosine', 12.5, 0.1 + 0.9 * (1 - math.cos(math.pi / 4)) / 2),
])
def test_ramps(policy, t, expected):
    s = dict(LINEAR, policy=policy)
    assert scheduled_weight(s, t) == pytest.approx(expected)


def test_steps():
    s = dict(loss='x', policy='step', milestones=[5, 10], weights=[1, 2, 3])
    assert [scheduled_weight(s, t) for t in (0, 4, 5, 9.9, 10, 50)] == \
        [1, 1, 2, 2, 3, 3]


def test_sets_the_module_weight_and_logs_it():
    runner = _runner()
    hook = LossWeightScheduleHook([LINEAR])
    hook.before_train(runner)
    runner.iter = 15
    hook.before_train_iter(runner, 0)
    assert runner.model.bbox_head.loss_bbox.loss_weight == pytest.approx(.55)
    logged = runner.message_hub.get_scalar(
        'train/weight/bbox_head.loss_bbox').current()
    assert logged == pytest.approx(0.55)


def test_guided_loss_scaling_beside_it_warns():
    """GuidedLossScaling rescales the classification loss to the scheduled
    box loss each iteration, undoing the schedule: a warning at the start,
    none without it."""
    runner = _runner()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        LossWeightScheduleHook([LINEAR]).before_train(runner)
    runner.hooks.append(GuidedLossScaling())
    with pytest.warns(UserWarning, match='with GuidedLossScaling: .* a '
                      'schedule on a classification loss has no effect'):
        LossWeightScheduleHook([LINEAR]).before_train(runner)


def test_resume_gives_the_uninterrupted_weights():
    """A fresh hook (as after --resume) at iteration k sets the weight an
    uninterrupted run had at k, for every policy, in iters and epochs."""
    schedules = [dict(LINEAR, policy='cosine', begin=1, end=3),
                 dict(loss='bbox_head.loss_bbox', policy='step',
                      milestones=[1, 2], weights=[.2, .5, 1.])]
    for schedule in schedules:
        runner = _runner(iters_per_epoch=8)
        hook = LossWeightScheduleHook([schedule], by_epoch=True)
        hook.before_train(runner)
        straight = []
        for it in range(40):
            runner.iter = it
            hook.before_train_iter(runner, it % 8)
            straight.append(runner.model.bbox_head.loss_bbox.loss_weight)
        assert len(set(straight)) > 2  # the schedule really moves
        for k in (0, 7, 8, 13, 23, 39):
            resumed = _runner(iters_per_epoch=8)
            resumed.iter = k
            fresh = LossWeightScheduleHook([schedule], by_epoch=True)
            fresh.before_train(resumed)
            fresh.before_train_iter(resumed, k % 8)
            assert resumed.model.bbox_head.loss_bbox.loss_weight == \
                straight[k]


@pytest.mark.parametrize('schedule,match', [
    (dict(LINEAR, policy='exp'), 'policy'),
    (dict(loss='x', policy='step', milestones=[5], weights=[1]), 'weights'),
    (dict(loss='x', policy='step', milestones=[5, 1], weights=[1, 2, 3]),
     'sorted'),
    ({k: v for k, v in LINEAR.items() if k != 'end'}, "'end'"),
    (dict(LINEAR, begin=20), 'must exceed'),
    (dict(LINEAR, milestones=[3]), 'unknown keys'),
    (dict(policy='linear'), "'loss'"),
    (dict(LINEAR, from_weight=-1.0), r'from_weight=-1\.0 must be'),
    (dict(LINEAR, to_weight='0.1'), "to_weight='0.1' must be"),
    (dict(loss='x', policy='step', milestones=[5], weights=[0.1, None]),
     r'weights\[1\]=None must be'),
    (dict(LINEAR, end='100'), "end='100' must be a finite number >= 0"),
    (dict(LINEAR, begin=-5), 'begin=-5 must be a finite number >= 0'),
    (dict(loss='x', policy='step', milestones=['10'], weights=[1, 2]),
     r"milestones=\['10'\] must be sorted numbers >= 0"),
    (dict(loss='x', policy='step', milestones=10, weights=[1, 2]),
     'needs milestones and weights lists .* got milestones=10'),
])
def test_bad_schedules(schedule, match):
    with pytest.raises(ValueError, match=match):
        LossWeightScheduleHook([schedule])


def test_bad_hook_arguments():
    # two schedules for one loss: the last one would silently win
    with pytest.raises(ValueError, match=r"more than one schedule for "
                       r"\['bbox_head.loss_bbox'\]"):
        LossWeightScheduleHook([LINEAR, dict(LINEAR, policy='cosine')])
    # a string would be truthy: iterations read as epochs
    with pytest.raises(ValueError, match="by_epoch must be True or False, "
                       "got 'False'"):
        LossWeightScheduleHook([LINEAR], by_epoch='False')
    # one schedule not in a list: iterated as its key strings
    with pytest.raises(TypeError, match="schedules must be a list of dicts, "
                       "got a dict: schedules={'loss': 'bbox_head.loss_bbox'"
                       ".*; wrap it in a list"):
        LossWeightScheduleHook(LINEAR)
    with pytest.raises(TypeError, match='schedules must be a list of dicts, '
                       'got a NoneType: schedules=None'):
        LossWeightScheduleHook(None)


def test_bad_module_path_named_at_before_train():
    with pytest.raises(ValueError, match='at least one'):
        LossWeightScheduleHook([])
    for path, match in (('bbox_head.loss_box', 'no module'),
                        ('bbox_head', 'no loss_weight')):
        hook = LossWeightScheduleHook([dict(LINEAR, loss=path)])
        with pytest.raises(ValueError, match=match):
            hook.before_train(_runner())


def test_example_config_builds():
    cfg = repo_config('retinanet_fl_adaptive_weight.py')
    hook = HOOKS.build(cfg.custom_hooks[0])
    assert isinstance(hook, LossWeightScheduleHook) and hook.by_epoch
    assert cfg.model.bbox_head.loss_bbox.loss_weight == \
        hook.schedules[0]['to_weight']


def test_resume_through_the_runner(toy_cfg, tmp_path):
    """Train 2 toy epochs straight, and 1 + resume 1: the logged weights of
    the second epoch are equal."""
    from mmengine.runner import Runner

    def train(name, max_epochs, resume_from=None):
        cfg = toy_cfg('retinanet_fl_adaptive_weight.py')
        cfg.train_cfg.max_epochs = max_epochs  # 4 iterations per epoch
        # the config's ramp over epochs 0-3, not --toy's share of 1 epoch
        cfg.custom_hooks[0].schedules[0].end = 3
        cfg.train_cfg.val_interval = 10  # no validation
        cfg.work_dir = str(tmp_path / name)
        cfg.experiment_name = name  # a message hub of its own
        if resume_from:
            cfg.resume, cfg.load_from = True, resume_from
        runner = Runner.from_cfg(cfg)
        runner.train()
        values, _ = runner.message_hub.get_scalar(
            'train/weight/bbox_head.loss_bbox').data
        return values.tolist()

    straight = train('straight', 2)
    train('first', 1)
    resumed = train('resumed', 2, str(tmp_path / 'first' / 'epoch_1.pth'))
    # cosine from 0.1 to 1.0 over 3 epochs, at iterations 0..7 (t = it / 4)
    assert straight == pytest.approx([
        0.1 + 0.9 * (1 - math.cos(math.pi * it / 12)) / 2
        for it in range(8)])
    assert resumed[-4:] == straight[4:]


def test_begin_defaults_to_zero():
    schedule = _check_schedule(0, dict(loss='bbox_head.loss_bbox', end=10,
                                       from_weight=0.0, to_weight=1.0))
    assert schedule['begin'] == 0
    assert scheduled_weight(schedule, 5) == pytest.approx(0.5)
