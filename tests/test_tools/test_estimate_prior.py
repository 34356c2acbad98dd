"""tools/estimate_prior.py: the prior, the suggested score threshold and the
per-class rows it prints, and its argument check."""
import json
import os.path as osp

import pytest

from helpers import CONFIGS, import_tool


def test_estimate_prior_tool(toy_data_root, tmp_path, capsys):
    tool = import_tool('estimate_prior')
    config = osp.join(CONFIGS, 'retinanet_fl.py')
    common = [config, '--toy', 'tiny', '--toy-data', toy_data_root]
    tool.main(common +
              ['--num-images', '4', '--json',
               str(tmp_path / 'e.json')])
    out = capsys.readouterr().out
    record = json.load(open(tmp_path / 'e.json'))
    assert record['num_images'] == 4 and record['head_type'] == 'RetinaHead'
    assert f"prior pi = {record['prior']:.4e}" in out
    assert f"score_thr ~ pi * C = {record['prior'] * 4:.2e}" in out
    assert 'ellipse' in out  # per-class rows by class name
    with pytest.raises(SystemExit, match='--num-images must be >= 0'):
        tool.main(common + ['--num-images', '-1'])
    with pytest.raises(SystemExit, match='--num-workers must be >= 0, got -2'):
        tool.main(common + ['--num-workers', '-2'])


def test_estimate_prior_tool_names_yolov3s_conf_thr(toy_data_root, tmp_path,
                                                    capsys):
    """YOLOv3 filters its objectness by conf_thr, not score_thr."""
    tool = import_tool('estimate_prior')
    tool.main([osp.join(CONFIGS, 'yolov3_ce_sf.py'), '--toy', 'tiny',
               '--toy-data', toy_data_root, '--num-images', '2', '--json',
               str(tmp_path / 'e.json')])
    record = json.load(open(tmp_path / 'e.json'))
    out = capsys.readouterr().out
    assert (f"conf_thr ~ objectness prior = "
            f"{record['objectness_prior']:.2e}") in out
    assert 'score_thr' not in out


def test_estimate_prior_tool_batches_as_the_config(monkeypatch):
    """The count groups images by aspect ratio when the config's training
    loader does (mmdet's AspectRatioBatchSampler, by name or subclass)."""
    from mmdet.registry import DATA_SAMPLERS
    from mmengine.registry import init_default_scope
    tool = import_tool('estimate_prior')
    init_default_scope('mmdet')
    groups = tool._groups_by_aspect_ratio
    assert groups(dict(batch_sampler=dict(type='AspectRatioBatchSampler')))
    assert groups(dict(batch_sampler=dict(
        type=DATA_SAMPLERS.get('TrackAspectRatioBatchSampler'))))
    assert not groups(dict(batch_sampler=None))
    assert not groups(dict(batch_size=2))


def test_estimate_prior_tool_single_class_yolov3(toy_data_root, capsys):
    """One class: the class channel's prior is 1 (no finite bias), which
    the tool reports instead of failing, as the hook leaves that channel."""
    tool = import_tool('estimate_prior')
    tool.main([osp.join(CONFIGS, 'yolov3_ce_sf.py'), '--toy', 'tiny',
               '--toy-data', toy_data_root, '--num-images', '2',
               '--cfg-options', 'model.bbox_head.num_classes=1'])
    out = capsys.readouterr().out
    assert 'class channel: one class, prior 1, bias left as initialised' in out
    assert 'objectness prior: ' in out and 'conf_thr ~ ' in out


@pytest.mark.parametrize('num_classes', [2, 10])
def test_estimate_prior_tool_head_classes_unlike_the_dataset_s(
        toy_data_root, capsys, num_classes):
    """A head of 10 classes on the 4-class toy set printed a prior divided
    by 10, one of 2 crashed on a tensor size: both are a clean error."""
    tool = import_tool('estimate_prior')
    with pytest.raises(SystemExit, match=f'error: RetinaHead has num_classes'
                       f'={num_classes} but the dataset has 4 classes'):
        tool.main([osp.join(CONFIGS, 'retinanet_fl.py'), '--toy', 'tiny',
                   '--toy-data', toy_data_root, '--num-images', '2',
                   '--cfg-options', f'model.bbox_head.num_classes='
                   f'{num_classes}'])
    assert 'prior pi' not in capsys.readouterr().out
