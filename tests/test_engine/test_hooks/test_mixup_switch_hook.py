"""MixupSwitchHook: mixup runs until max_epochs - num_last_epochs and not
after, for the MultiImageMixDataset wrapper and for the cached transform in
a plain pipeline, through dataset wrappers and persistent workers; a model
whose heads would ignore the mixup weights is reported."""
import re
import warnings
from types import SimpleNamespace
from unittest.mock import MagicMock

import numpy as np
import pytest
import torch
from mmengine.dataset import (BaseDataset, ConcatDataset, RepeatDataset,
                              pseudo_collate)
from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from torch.utils.data import DataLoader

from mmdet.datasets import MultiImageMixDataset
from mmdet.registry import HOOKS, MODELS, TRANSFORMS
from mmdet.structures.bbox import HorizontalBoxes
from mmdet_freebies.engine.hooks import MixupSwitchHook
from mmdet_freebies.engine.hooks.mixup_switch_hook import \
    heads_ignoring_weights


def _load(results):
    results.update(
        img=np.full((4, 4, 3), 10 * results['idx'], np.uint8),
        img_shape=(4, 4),
        gt_bboxes=HorizontalBoxes(np.array([[0, 0, 2, 2]], np.float32)),
        gt_bboxes_labels=np.array([results['idx']], np.int64),
        gt_ignore_flags=np.zeros(1, bool))
    return results


class _Synthetic(BaseDataset):

    def load_data_list(self):
        return [dict(idx=i) for i in range(4)]


def wrapper_dataset():
    return MultiImageMixDataset(
        dataset=_Synthetic(pipeline=[_load]),
        pipeline=[dict(type='VisuallyCoherentMixup', ratio=0.5)])


def cached_dataset():
    from mmdet_freebies.datasets.transforms import VisuallyCoherentMixupCached
    return _Synthetic(
        pipeline=[_load, VisuallyCoherentMixupCached(ratio=0.5)])


def mixed(dataset):
    """Whether the dataset still mixes (mixed samples have 2 objects)."""
    return [len(dataset[i]['gt_bboxes']) == 2 for i in range(4)]


def runner(dataset, epoch, max_epochs=5, **loader_kwargs):
    loader = loader_kwargs.pop('loader', None) or SimpleNamespace(
        dataset=dataset, persistent_workers=False)
    return SimpleNamespace(
        epoch=epoch, max_epochs=max_epochs, train_dataloader=loader,
        logger=MagicMock(), model=torch.nn.Module(),
        train_loop=MagicMock(spec=EpochBasedTrainLoop))


def test_refuses_an_iteration_based_loop():
    """IterBasedTrainLoop runs as one epoch whose data iterator (and its
    workers) lives for the whole run: an epoch switch would log "mixup off"
    and mix to the end, so it is refused unless nothing is to be switched."""
    r = runner(wrapper_dataset(), 0)
    r.train_loop = MagicMock(spec=IterBasedTrainLoop)
    with pytest.raises(ValueError, match=r'training loop is '
                       r'IterBasedTrainLoop.*num_last_epochs=20'):
        MixupSwitchHook().before_train(r)
    MixupSwitchHook(num_last_epochs=0).before_train(r)


@pytest.mark.parametrize('make', [wrapper_dataset, cached_dataset])
def test_switches_exactly_for_the_last_epochs(make):
    np.random.seed(0)
    dataset = make()
    hook = HOOKS.build(dict(type='MixupSwitchHook', num_last_epochs=2))
    for epoch in (0, 1, 2):  # 5 epochs, last 2 are 3 and 4
        hook.before_train_epoch(runner(dataset, epoch))
        assert any(mixed(dataset)), epoch
    hook.before_train_epoch(runner(dataset, 3))
    assert not any(mixed(dataset))
    assert all('gt_weights' not in dataset[i] for i in range(4))
    hook.before_train_epoch(runner(dataset, 4))  # idempotent
    assert not any(mixed(dataset))


def test_keeps_existing_skip_types_and_scoped_types():
    dataset = MultiImageMixDataset(
        dataset=_Synthetic(pipeline=[_load]),
        pipeline=[
            dict(type='mmdet.VisuallyCoherentMixup', ratio=0.5),
            dict(type='RandomFlip', prob=0.5)
        ],
        skip_type_keys=['RandomFlip'])
    MixupSwitchHook(num_last_epochs=1).before_train_epoch(
        runner(dataset, 4))
    assert dataset._skip_type_keys == [
        'RandomFlip', 'mmdet.VisuallyCoherentMixup'
    ]


def test_finds_transforms_inside_dataset_wrappers():
    np.random.seed(0)
    wrapped = RepeatDataset(cached_dataset(), times=2)
    MixupSwitchHook(num_last_epochs=1).before_train_epoch(
        runner(wrapped, 4))
    assert not any(len(wrapped[i]['gt_bboxes']) == 2 for i in range(8))
    # ConcatDataset holds its parts in `datasets`: both are switched off
    concat = ConcatDataset([cached_dataset(), cached_dataset()])
    assert any(len(concat[i]['gt_bboxes']) == 2 for i in range(8))
    MixupSwitchHook(num_last_epochs=1).before_train_epoch(runner(concat, 4))
    assert not any(len(concat[i]['gt_bboxes']) == 2 for i in range(8))


def test_finds_transforms_nested_in_wrapping_transforms():
    """A cached mixup inside mmcv's RandomApply (a Compose of its own),
    RandomChoice (a list of Composes) or a nested Compose is removed too."""
    from mmcv.transforms import Compose, RandomApply, RandomChoice

    from mmdet_freebies.datasets.transforms import VisuallyCoherentMixupCached

    def mixup():
        return VisuallyCoherentMixupCached(ratio=0.5)

    wrappers = [RandomApply([mixup()], prob=1.),
                RandomChoice([[mixup()], [mixup()]]),
                Compose([Compose([mixup()])])]
    for wrapper in wrappers:
        np.random.seed(0)
        dataset = _Synthetic(pipeline=[_load, wrapper])
        assert any(mixed(dataset))
        hook = MixupSwitchHook(num_last_epochs=1)
        assert hook.switch_off(dataset, dry_run=True) == (
            2 if isinstance(wrapper, RandomChoice) else 1)
        hook.before_train_epoch(runner(dataset, 4))
        assert not any(mixed(dataset)), type(wrapper).__name__


def test_resume_inside_the_last_epochs_switches():
    dataset = wrapper_dataset()
    MixupSwitchHook(num_last_epochs=2).before_train_epoch(
        runner(dataset, 4))
    assert not any(mixed(dataset))


def test_persistent_workers_see_the_switch():
    np.random.seed(0)
    dataset = wrapper_dataset()
    loader = DataLoader(dataset, batch_size=4, num_workers=1,
                        persistent_workers=True, collate_fn=pseudo_collate)
    first = next(iter(loader))
    # mixed samples have both images' boxes (one drawn as its own partner
    # is left unmixed)
    assert any(len(b) == 2 for b in first['gt_bboxes'])
    MixupSwitchHook(num_last_epochs=1).before_train_epoch(
        runner(None, 4, loader=loader))
    second = next(iter(loader))
    assert all(len(b) == 1 for b in second['gt_bboxes'])


def test_warnings_and_bad_arguments():
    with pytest.warns(UserWarning, match='mixup is never used'):
        MixupSwitchHook(num_last_epochs=5).before_train(
            runner(wrapper_dataset(), 0))
    # a misspelt type is an error before training, not a warning at the
    # switch epoch; the check does not switch anything off
    misspelt = re.escape("type_keys=('VisuallyCoherentMixUp',)")
    with pytest.raises(ValueError, match=misspelt):
        MixupSwitchHook(type_keys=['VisuallyCoherentMixUp']).before_train(
            runner(wrapper_dataset(), 0))
    for make in (wrapper_dataset, cached_dataset):
        mixing = make()
        MixupSwitchHook(num_last_epochs=1).before_train(runner(mixing, 0))
        np.random.seed(0)
        assert any(mixed(mixing))
    for value in (-1, 1.5, True):
        with pytest.raises(ValueError, match=f'num_last_epochs={value!r}'):
            MixupSwitchHook(num_last_epochs=value)
    with pytest.raises(ValueError, match='type_keys'):
        MixupSwitchHook(type_keys='VisuallyCoherentMixup')


@pytest.mark.parametrize('packer, with_weights, warns', [
    ('PackDetInputs', True, True),
    ('PackDetInputsWithWeights', True, False),
    ('PackDetInputs', False, False),  # nothing to drop
])
def test_reports_a_packer_that_drops_the_weights(packer, with_weights,
                                                  warns):
    """mmdet's PackDetInputs keeps only the keys it knows: behind mixup it
    silently trains every object at full weight."""
    from mmcv.transforms import RandomApply

    from mmdet_freebies.datasets.transforms import VisuallyCoherentMixupCached
    wrapper = MultiImageMixDataset(
        dataset=_Synthetic(pipeline=[_load]),
        pipeline=[
            dict(type='VisuallyCoherentMixup', with_weights=with_weights),
            dict(type=packer)
        ])
    # the cached transform nested in a wrapping transform and a dataset
    # wrapper, the packer at the end
    nested = RepeatDataset(_Synthetic(pipeline=[
        _load,
        RandomApply([VisuallyCoherentMixupCached(with_weights=with_weights)]),
        TRANSFORMS.build(dict(type=packer))
    ]), times=2)
    hook = MixupSwitchHook(num_last_epochs=1)
    for dataset in (wrapper, nested):
        if warns:
            with pytest.warns(UserWarning,
                              match=re.escape("['PackDetInputs']")):
                hook.before_train(runner(dataset, 0))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter('error')
                hook.before_train(runner(dataset, 0))


@pytest.mark.parametrize('config, plain', [
    ('yolov3_mixup.py', []),
    ('faster_rcnn_mixup.py', []),
    ('yolov3_baseline.py', ['bbox_head (YOLOV3Head)']),
    ('retinanet_fl.py', ['bbox_head (RetinaHead)']),
    ('faster_rcnn_biased.py', ['rpn_head (RPNHead)',
                               'roi_head (StandardRoIHead)',
                               'roi_head.bbox_head (Shared2FCBBoxHead)']),
])
def test_reports_the_heads_that_ignore_the_weights(toy_cfg, config, plain):
    model = MODELS.build(toy_cfg(config).model)
    assert heads_ignoring_weights(model) == plain
    hook = MixupSwitchHook(num_last_epochs=1)
    train = runner(wrapper_dataset(), 0)
    train.model = model
    if plain:
        with pytest.warns(UserWarning, match=re.escape(str(plain))):
            hook.before_train(train)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            hook.before_train(train)


def test_plain_heads_are_fine_for_mixup_without_weights(toy_cfg):
    # the paper's even 0.5:0.5 mixup adds no weights: nothing is ignored
    train = runner(MultiImageMixDataset(
        dataset=_Synthetic(pipeline=[_load]),
        pipeline=[dict(type='VisuallyCoherentMixup', ratio=0.5,
                       with_weights=False)]), 0)
    train.model = MODELS.build(toy_cfg('retinanet_fl.py').model)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        MixupSwitchHook(num_last_epochs=1).before_train(train)


def test_a_class_typed_mixup_in_multi_image_mix_dataset_is_named():
    """mmdet's skip_type_keys match type strings: a class (as pure-Python
    configs write it) could never be switched off."""
    from mmdet.datasets.transforms import RandomFlip

    from mmdet_freebies.datasets.transforms import VisuallyCoherentMixup
    flip = dict(type=RandomFlip, prob=0.5)  # other classes are fine
    dataset = MultiImageMixDataset(
        dataset=_Synthetic(pipeline=[_load]),
        pipeline=[dict(type=VisuallyCoherentMixup, ratio=0.5), flip])
    with pytest.raises(ValueError, match="gives VisuallyCoherentMixup as a "
                       "class; .* write type='VisuallyCoherentMixup'"):
        MixupSwitchHook(num_last_epochs=1).before_train(runner(dataset, 0))
    dataset = MultiImageMixDataset(
        dataset=_Synthetic(pipeline=[_load]),
        pipeline=[dict(type='VisuallyCoherentMixup', ratio=0.5), flip])
    MixupSwitchHook(num_last_epochs=1).before_train_epoch(runner(dataset, 4))
    assert dataset._skip_type_keys == ['VisuallyCoherentMixup']


def test_a_plain_roi_head_around_a_weighted_bbox_head_is_reported(toy_cfg):
    cfg = toy_cfg('faster_rcnn_mixup.py').model
    cfg.roi_head.type = 'StandardRoIHead'
    assert heads_ignoring_weights(MODELS.build(cfg)) == [
        'roi_head (StandardRoIHead)']


@HOOKS.register_module()
class _WeightsSpyHook(Hook):
    """Records per epoch whether the training batches carried weights."""

    def __init__(self):
        self.seen = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        has = all('weights' in s.gt_instances
                  for s in data_batch['data_samples'])
        self.seen.setdefault(runner.epoch, set()).add(has)


@pytest.mark.slow
def test_end_to_end_yolov3_mixup_on_toy(toy_cfg, tmp_path):
    from mmengine.runner import Runner
    cfg = toy_cfg('yolov3_mixup.py', 'tiny')
    cfg.train_cfg.update(max_epochs=2)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.default_hooks.pop('visualization', None)
    cfg.custom_hooks = [
        dict(type='MixupSwitchHook', num_last_epochs=1),
        dict(type='_WeightsSpyHook')
    ]
    cfg.train_dataloader.dataset.dataset.indices = 4  # 2 iters per epoch
    cfg.work_dir = str(tmp_path)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10)
    cfg.randomness = dict(seed=0)
    runner = Runner.from_cfg(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: OpenMP threads only contend
    try:
        runner.train()
    finally:
        torch.set_num_threads(threads)
    spy = next(h for h in runner.hooks if isinstance(h, _WeightsSpyHook))
    assert spy.seen == {0: {True}, 1: {False}}


def test_switches_once():
    """The next epoch does not switch (and log, and restart persistent
    workers) again."""
    r = runner(wrapper_dataset(), 3)
    hook = MixupSwitchHook(num_last_epochs=2)
    hook.before_train_epoch(r)
    r.epoch = 4
    hook.before_train_epoch(r)
    assert r.logger.info.call_count == 1
