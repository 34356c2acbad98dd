import json
import shutil
import warnings
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmdet.registry import DATASETS
from mmdet_freebies.datasets.toy import GENERATOR_VERSION, make_toy_dataset
from mmdet_freebies.utils.toy import apply_toy

from helpers import CONFIGS, repo_config


def test_apply_toy_rewrites_data_model_and_schedule(toy_cfg, toy_data_root):
    cfg = toy_cfg('faster_rcnn_biased.py', size='small')
    ds = cfg.train_dataloader.dataset
    assert ds.data_root == toy_data_root
    assert ds.ann_file == 'annotations/train.json'
    assert len(ds.metainfo['classes']) == 4
    assert cfg.model.roi_head.bbox_head.num_classes == 4
    assert cfg.model.backbone.depth == 18
    assert cfg.model.backbone.init_cfg is None
    assert cfg.model.neck.in_channels == [16, 32, 64, 128]
    assert cfg.model.rpn_head.in_channels == 64
    assert cfg.train_cfg.max_epochs == 20
    # The 1x schedule's milestones (8, 11 of 12) keep their place.
    assert cfg.param_scheduler[1].milestones == [13, 18]
    assert cfg.param_scheduler[0].end == 100
    assert cfg.val_evaluator.ann_file == toy_data_root + \
        'annotations/val.json'
    assert cfg.env_cfg.dist_cfg == dict(backend='gloo')
    # the toy lr is for the toy batch: --auto-scale-lr keeps it on 1 process
    assert cfg.train_dataloader.batch_size == \
        cfg.auto_scale_lr.base_batch_size == 8


def test_apply_toy_scales_long_schedules(toy_cfg):
    cfg = toy_cfg('yolov3_baseline.py', size='small')
    assert cfg.train_cfg.max_epochs == 20
    assert cfg.param_scheduler[1].milestones == [16, 18]  # 218, 246 of 273
    assert cfg.model.backbone.type == 'ResNet'
    assert cfg.model.bbox_head.num_classes == 4


def test_max_epochs_given_with_the_toy_size_scales_the_schedule(
        toy_data_root):
    """``--toy tiny --cfg-options train_cfg.max_epochs=10``: the schedule
    is scaled to the 10 epochs, not left at the size's 1 (where mixup would
    never switch off; the cosine follows max_epochs by itself, see
    test_configs.py)."""
    from mmdet_freebies.utils.cli import load_config
    args = SimpleNamespace(
        config=f'{CONFIGS}/yolov3_mixup.py', toy='tiny',
        toy_data=toy_data_root, local_rank=0, launcher='none',
        work_dir=None, cfg_options={'train_cfg.max_epochs': 10})
    cfg = load_config(args)
    assert cfg.train_cfg.max_epochs == cfg.train_cfg.val_interval == 10
    hook, = [h for h in cfg.custom_hooks if h.type == 'MixupSwitchHook']
    assert 0 < hook.num_last_epochs < 10
    with pytest.raises(ValueError, match='max_epochs must be an int >= 1'):
        apply_toy(repo_config('retinanet_fl.py'), 'tiny',
                  toy_data_root, max_epochs=0)


def test_tiny_cuts_the_training_set_only(tmp_path):
    """CocoMetric scores every image of its ann_file: a val set cut to 8 of
    12 images would count the other 4 images' objects as missed."""
    root = str(tmp_path) + '/'
    make_toy_dataset(root, seed=0, num_train=12, num_val=12,
                     img_size=(64, 64), min_size=6)
    cfg = apply_toy(repo_config('retinanet_fl.py'), 'tiny', root)
    init_default_scope('mmdet')
    assert len(DATASETS.build(cfg.train_dataloader.dataset)) == 8
    for loader in ('val_dataloader', 'test_dataloader'):
        assert len(DATASETS.build(cfg[loader].dataset)) == 12


@pytest.mark.parametrize('size,low,high', [('small', 67, 128),
                                           ('tiny', 33, 64)])
def test_random_shapes_and_pipeline_variables_are_scaled(toy_cfg, size, low,
                                                        high):
    """BatchSyncRandomResize's 320-608 keeps its proportion of the toy
    size; the top-level train_pipeline is resized as the loader's."""
    cfg = toy_cfg('yolov3_random_shapes.py', size=size)
    augment, = cfg.model.data_preprocessor.batch_augments
    assert tuple(augment.random_size_range) == (low, high)
    resizes = [[t.scale for t in pipeline if t.type.endswith('Resize')]
               for pipeline in (cfg.train_pipeline,
                                cfg.train_dataloader.dataset.pipeline)]
    assert resizes[0] == resizes[1] == [(high, high)]


def test_random_shapes_stay_at_least_32(toy_data_root):
    cfg = repo_config('yolov3_random_shapes.py')
    cfg.model.data_preprocessor.batch_augments[0].random_size_range = (160,
                                                                       608)
    apply_toy(cfg, 'tiny', toy_data_root)  # 160 * 64 // 608 = 16
    augment, = cfg.model.data_preprocessor.batch_augments
    assert tuple(augment.random_size_range) == (32, 64)


def test_adam_gets_the_adam_lr_and_a_whole_schedule_switch_stays_whole(
        toy_data_root):
    cfg = repo_config('yolov3_mixup.py')
    cfg.optim_wrapper.optimizer = dict(type='AdamW', lr=0.1)
    cfg.custom_hooks[0].num_last_epochs = cfg.train_cfg.max_epochs
    apply_toy(cfg, 'small', toy_data_root)
    assert cfg.optim_wrapper.optimizer.lr == 1e-3
    assert cfg.custom_hooks[0].num_last_epochs == 20  # mixup never runs


@pytest.mark.parametrize('config,size,last', [
    ('yolov3_mixup.py', 'small', 1),  # 20 of 273 epochs -> 1 of 20
    ('faster_rcnn_mixup.py', 'small', 2),  # 1 of 12 -> 2 of 20
    ('yolov3_mixup.py', 'tiny', 0),  # 1 epoch: it keeps mixup
    ('faster_rcnn_mixup.py', 'tiny', 0),
])
def test_mixup_switch_scales_and_leaves_a_mixup_epoch(toy_cfg, config, size,
                                                      last):
    cfg = toy_cfg(config, size=size)
    hook, = [h for h in cfg.custom_hooks if h.type == 'MixupSwitchHook']
    assert hook.num_last_epochs == last < cfg.train_cfg.max_epochs


@pytest.mark.parametrize('size,end', [('small', 5.0), ('tiny', 0.25)])
def test_loss_weight_ramp_keeps_its_share_of_the_schedule(toy_cfg, size,
                                                          end):
    """The box-weight ramp ends at epoch 3 of 12, a quarter of the run."""
    cfg = toy_cfg('retinanet_fl_adaptive_weight.py', size=size)
    sched, = cfg.custom_hooks[0].schedules
    assert (sched.begin, sched.end) == (0, end)


@pytest.mark.parametrize('cuda,norm,backend', [(False, 'BN', 'gloo'),
                                               (True, 'SyncBN', 'nccl')])
def test_syncbn_becomes_bn_only_without_cuda(toy_cfg, monkeypatch, cuda,
                                             norm, backend):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    cfg = toy_cfg('yolov3_syncbn.py')
    assert cfg.model.neck.norm_cfg.type == norm
    assert cfg.model.bbox_head.norm_cfg.type == norm
    assert cfg.env_cfg.dist_cfg.backend == backend


def test_unknown_size_and_missing_data(tmp_path):
    cfg = repo_config('retinanet_fl.py')
    with pytest.raises(ValueError, match="unknown --toy size 'huge'"):
        apply_toy(cfg, 'huge')
    with pytest.raises(FileNotFoundError, match='make_toy_dataset'):
        apply_toy(cfg, 'tiny', str(tmp_path / 'nowhere'))
    with pytest.raises(ValueError, match="no 'model'"):
        apply_toy(Config(dict(a=1)), 'tiny', str(tmp_path))


def test_data_of_another_generator_version_warns(tmp_path, toy_data_root):
    """Toy data written before the generator changed gives other results
    than the docs: apply_toy says so (the first version had no stamp)."""
    root = tmp_path / 'old'
    shutil.copytree(toy_data_root, root)
    ann = root / 'annotations' / 'train.json'
    coco = json.loads(ann.read_text())
    cfg = repo_config('retinanet_fl.py')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        apply_toy(cfg.copy(), 'tiny', str(root))
    del coco['info']['generator_version']
    ann.write_text(json.dumps(coco))
    with pytest.warns(UserWarning, match=f'generator version 1, the current '
                      f'one is {GENERATOR_VERSION}'):
        apply_toy(cfg, 'tiny', str(root))


def test_a_dropped_load_from_and_an_assumed_schedule_warn(toy_data_root):
    """The toy model cannot load the config's checkpoint, and a train_cfg
    without max_epochs is scaled as mmdet's 1x: both are said."""
    cfg = repo_config('retinanet_fl.py')
    cfg.load_from = 'checkpoints/retinanet_r50_coco.pth'
    with pytest.warns(UserWarning, match="load_from='checkpoints/retinanet_"
                      "r50_coco.pth' is dropped"):
        apply_toy(cfg, 'tiny', toy_data_root)
    assert cfg.load_from is None
    cfg = repo_config('retinanet_fl.py')
    del cfg.train_cfg['max_epochs']
    with pytest.warns(UserWarning, match='train_cfg has no max_epochs; .* '
                      'as if it were max_epochs=12'):
        apply_toy(cfg, 'tiny', toy_data_root)
    assert cfg.train_cfg.max_epochs == 1
    # load_from=None (mmdet's default_runtime) or none at all: no warning
    for drop in (False, True):
        cfg = repo_config('retinanet_fl.py')
        assert 'load_from' in cfg and cfg.load_from is None
        if drop:
            cfg.pop('load_from')
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            apply_toy(cfg, 'tiny', toy_data_root)
        assert cfg.load_from is None
