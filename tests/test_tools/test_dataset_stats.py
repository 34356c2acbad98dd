"""tools/dataset_stats.py: the table, the plots and the counts it prints."""
import json
import os.path as osp
import shutil

import pytest

from helpers import CONFIGS, import_tool


def test_cli_on_the_toy_set(toy_data_root, tmp_path, capsys):
    tool = import_tool('dataset_stats')
    tool.main([osp.join(CONFIGS, 'retinanet_fl.py'), '--toy',
               'tiny', '--toy-data', toy_data_root, '--val', '--out-dir',
               str(tmp_path), '--prior-images', '4'])
    out = capsys.readouterr().out
    assert '| statistic | train | val |' in out
    assert 'anchor fg/bg ratio (assigner)' in out
    for name in ('stats.md', 'box_sizes.png', 'aspect_ratios.png',
                 'classes.png'):
        assert osp.isfile(osp.join(tmp_path, name))
    with pytest.raises(SystemExit):
        tool.parse_args(['x.py', '--prior-images', '-3'])
    assert '--prior-images must be >= 0 (0 skips it), got -3' in \
        capsys.readouterr().err


def test_cli_counts_the_images_training_filters_out(toy_data_root,
                                                   tmp_path, capsys):
    """retinanet_fl's train set drops images without annotations
    (filter_empty_gt); the statistics still count them."""
    root = tmp_path / 'toy'
    shutil.copytree(toy_data_root, root)
    ann = root / 'annotations' / 'train.json'
    coco = json.loads(ann.read_text())
    empty = {img['id'] for img in coco['images'][:3]}
    coco['annotations'] = [a for a in coco['annotations']
                           if a['image_id'] not in empty]
    ann.write_text(json.dumps(coco))
    tool = import_tool('dataset_stats')
    tool.main([osp.join(CONFIGS, 'retinanet_fl.py'), '--toy',
               'small', '--toy-data', str(root), '--out-dir',
               str(tmp_path / 'out'), '--prior-images', '0'])
    line = next(x for x in capsys.readouterr().out.splitlines()
                if x.startswith('| images without annotations'))
    assert line.split('|')[2].strip() == '3'


def _toy_retinanet_args(toy_data_root, tmp_path, option):
    return [osp.join(CONFIGS, 'retinanet_fl.py'), '--toy', 'tiny',
            '--toy-data', toy_data_root, '--out-dir', str(tmp_path),
            '--cfg-options', option]


def test_an_uncounted_head_is_refused_before_the_annotations(
        toy_data_root, tmp_path, capsys):
    """The anchor fg/bg ratio needs a head the prior estimator counts: the
    error names the head's type before any annotation is read."""
    tool = import_tool('dataset_stats')
    args = _toy_retinanet_args(toy_data_root, tmp_path,
                               'model.bbox_head.type=FreeAnchorRetinaHead')
    with pytest.raises(SystemExit, match="error: anchor fg/bg ratio .* head "
                       "type 'FreeAnchorRetinaHead' .* supported"):
        tool.main(args)
    assert 'reading annotations' not in capsys.readouterr().out
    # without the ratio the head is not read
    tool.main(args + ['--prior-images', '0'])
    assert osp.isfile(osp.join(tmp_path, 'stats.md'))


def test_head_classes_unlike_the_dataset_s_are_refused_first(
        toy_data_root, tmp_path, capsys):
    """The prior divides by the head's classes: a head with 10 on the
    4-class set is a clean error as soon as the training set is built."""
    tool = import_tool('dataset_stats')
    args = _toy_retinanet_args(toy_data_root, tmp_path,
                               'model.bbox_head.num_classes=10')
    with pytest.raises(SystemExit, match="error: anchor fg/bg ratio .* "
                       'RetinaHead has num_classes=10 but the dataset has 4'):
        tool.main(args)
    assert 'anchor fg/bg ratio on' not in capsys.readouterr().out
    assert not osp.exists(osp.join(tmp_path, 'stats.md'))
