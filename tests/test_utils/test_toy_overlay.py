import pytest
from mmengine.config import Config

from mmdet_freebies.utils.toy import apply_toy

from helpers import CONFIGS


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


def test_apply_toy_scales_long_schedules(toy_cfg):
    cfg = toy_cfg('yolov3_baseline.py', size='small')
    assert cfg.train_cfg.max_epochs == 20
    assert cfg.param_scheduler[1].milestones == [16, 18]  # 218, 246 of 273
    assert cfg.model.backbone.type == 'ResNet'
    assert cfg.model.bbox_head.num_classes == 4


def test_unknown_size_and_missing_data(tmp_path):
    cfg = Config.fromfile(f'{CONFIGS}/retinanet_fl.py')
    with pytest.raises(ValueError, match="unknown --toy size 'huge'"):
        apply_toy(cfg, 'huge')
    with pytest.raises(FileNotFoundError, match='make_toy_dataset'):
        apply_toy(cfg, 'tiny', str(tmp_path / 'nowhere'))
    with pytest.raises(ValueError, match="no 'model'"):
        apply_toy(Config(dict(a=1)), 'tiny', str(tmp_path))
