import os.path as osp

import pytest
from mmengine.config import Config

from helpers import CONFIGS, import_tool, repo_config

sweep = import_tool('sweep_loss_weights')


def test_parse_values():
    assert sweep.parse_values('0.01,0.05, 1,10') == [0.01, 0.05, 1.0, 10.0]
    for bad in ('0,1', 'a,1', '', '-1', '1,inf', 'nan'):
        with pytest.raises(ValueError, match='--values'):
            sweep.parse_values(bad)


@pytest.mark.parametrize('args,message', [
    (['--toy', 'huge'], "unknown --toy size 'huge'"),
    (['--score-thr', '2'], '--score-thr must be in [0, 1], got 2.0'),
    (['--toy-data', 'data/x/'], "--toy-data 'data/x/' is only read with "
     '--toy'),
    (['--values', '0,1'], '--values must be positive and finite'),
    # %g names the work dirs: the runs would overwrite each other
    (['--values', '0.1,0.1000001,2,1,1'], "--values '0.1,0.1000001,2,1,1' "
     "name runs alike (0.1, 0.1000001 -> '0.1'; 1, 1 -> '1')"),
])
def test_bad_arguments_fail_before_training(args, message, capsys):
    with pytest.raises(SystemExit):
        sweep.parse_args(['c.py', '--key', 'k', '--values', '1'] + args)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize('rows,status', [
    ([dict(diverged=True)] * 2, 1),  # no run finished
    ([dict(diverged=False)] * 2, 0),
    ([dict(diverged=True), dict(diverged=False)], 0),  # a result
    # a run that failed (not by a non-finite loss) is an error
    ([dict(diverged=True, failed=True), dict(diverged=False)], 1),
])
def test_exit_status(tmp_path, monkeypatch, rows, status):
    from mmdet_freebies.utils import ablation
    results = iter(rows)
    monkeypatch.setattr(ablation, 'train_and_eval',
                        lambda *a, **k: next(results))
    assert sweep.main([
        osp.join(CONFIGS, 'retinanet_fl.py'), '--key',
        'model.bbox_head.loss_bbox.loss_weight', '--values', '0.5,1',
        '--work-dir', str(tmp_path)]) == status


def test_the_key_must_name_a_number_in_the_config(tmp_path):
    cfg = repo_config('faster_rcnn_biased.py')
    sweep.check_key(cfg, 'model.rpn_head.loss_bbox.loss_weight')
    sweep.check_key(cfg, 'model.test_cfg.rcnn.score_thr')
    for key, match in (
            ('model.rpn_head.loss_bbox.loss_weigth',
             "no 'model.rpn_head.loss_bbox.loss_weigth'"),
            ('model.roi_head.bbox_head', 'not a number'),
            ('model.test_cfg.rcnn.scor_thr', "no 'model.test_cfg.rcnn.scor"),
            ('model.rpn_head.loss_bbox', 'not a number')):
        with pytest.raises(ValueError, match=match):
            sweep.check_key(cfg, key)
    with pytest.raises(SystemExit, match='loss_weigth'):
        sweep.main([
            osp.join(CONFIGS, 'retinanet_fl.py'), '--key',
            'model.bbox_head.loss_bbox.loss_weigth', '--values', '0.5',
            '--work-dir', str(tmp_path)])


def test_a_broken_config_is_a_clean_error(tmp_path, monkeypatch):
    from mmdet_freebies.utils import ablation
    monkeypatch.setattr(ablation, 'train_and_eval', None)  # never reached
    config = tmp_path / 'broken.py'
    config.write_text('model = dict(type=\'RetinaNet\'\n')
    with pytest.raises(SystemExit, match=f"error: cannot load config "
                       f"'{config}': SyntaxError"):
        sweep.main([str(config), '--key', 'model.x', '--values', '1',
                    '--work-dir', str(tmp_path / 'out')])


def test_a_scheduled_weight_cannot_be_swept():
    """retinanet_fl_adaptive_weight.py ramps the box weight with
    LossWeightScheduleHook: every run of a sweep of it would train alike."""
    cfg = repo_config('retinanet_fl_adaptive_weight.py')
    sweep.check_key(cfg, 'model.bbox_head.loss_cls.loss_weight')
    with pytest.raises(ValueError, match='is scheduled by the config'):
        sweep.check_key(cfg, 'model.bbox_head.loss_bbox.loss_weight')


def test_sweep_config_adds_the_error_metric(tmp_path):
    path = sweep.write_sweep_config(
        repo_config('retinanet_fl.py'),
        str(tmp_path / 'sweep.py'), score_thr=0.2)
    cfg = Config.fromfile(path)
    assert [e['type'] for e in cfg.val_evaluator] == [
        'CocoMetric', 'DetectionErrorMetric']
    assert cfg.val_evaluator[1]['score_thr'] == 0.2
    # Everything else is the base config's.
    assert cfg.model.bbox_head.loss_bbox.loss_weight == 1.0
    assert cfg.custom_imports['imports'] == ['mmdet_freebies']


RESULTS = [
    {'coco/bbox_mAP': 0.101, 'coco/bbox_mAP_50': 0.25,
     'coco/bbox_mAP_s': 0.02, 'det_err/tp': 40.0, 'det_err/fp': 10.0,
     'det_err/fn': 60.0, 'det_err/precision': 0.8, 'det_err/recall': 0.4,
     'det_err/mean_iou': 0.7123, 'det_err/fp_small': 7.0,
     'diverged': False},
    {'coco/bbox_mAP': 0.2, 'diverged': True},
    {'det_err/tp': 0.0, 'det_err/fp': 0.0, 'det_err/fn': 36.0,
     'det_err/precision': 0.0, 'det_err/recall': 0.0,
     'det_err/mean_iou': 0.0, 'det_err/fp_small': 0.0, 'diverged': False},
]


def test_table_and_plot(tmp_path):
    table = sweep.markdown_table('model.bbox_head.loss_bbox.loss_weight',
                                 [0.5, 10, 20], RESULTS)
    lines = table.splitlines()
    assert lines[2].startswith('| loss_weight | AP | AP50 | AP_S | TP |')
    assert lines[4] == ('| 0.5 | 0.101 | 0.250 | 0.020 | 40 | 10 | 60 | '
                        '0.800 | 0.400 | 0.712 | 7 |')
    assert lines[5] == '| 10 |' + ' n/a |' * 10
    assert lines[6] == ('| 20 | no det. | no det. | no det. | 0 | 0 | 36 | '
                        '0.000 | 0.000 | 0.000 | 0 |')
    out = str(tmp_path / 'sweep.png')
    sweep.plot_sweep('w', [0.5, 10, 20], RESULTS, out)
    assert osp.getsize(out) > 1000
