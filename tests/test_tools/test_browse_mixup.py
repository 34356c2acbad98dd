"""tools/browse_mixup.py: a grid of mixed samples whose boxes show their
weights, and clear errors for bad arguments."""

import cv2
import pytest
import torch
from mmengine.structures import InstanceData

from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes

from helpers import CONFIGS, import_tool

browse_mixup = import_tool('browse_mixup')


def test_writes_a_grid_of_the_training_samples(tmp_path, toy_data_root,
                                               capsys):
    out = str(tmp_path / 'grid.png')
    browse_mixup.main([f'{CONFIGS}/yolov3_mixup.py', '--toy', 'tiny',
                       '--toy-data', toy_data_root, '--num', '3', '--cell',
                       '64', '--out', out])
    grid = cv2.imread(out)
    # 3 cells of 64 px (+ a 16 px caption) and 4 px gutters: 2 x 2
    assert grid.shape == (2 * (64 + 16 + 4), 2 * (64 + 4), 3)
    assert 'wrote 3 samples' in capsys.readouterr().out


def test_more_samples_than_the_set_has_warns(tmp_path, toy_data_root,
                                            capsys):
    out = str(tmp_path / 'grid.png')
    with pytest.warns(UserWarning, match='--num 20: the training set has '
                      'only 8 samples'):
        browse_mixup.main([f'{CONFIGS}/yolov3_mixup.py', '--toy', 'tiny',
                           '--toy-data', toy_data_root, '--num', '20',
                           '--cell', '32', '--out', out])
    assert 'wrote 8 samples' in capsys.readouterr().out


@pytest.mark.parametrize('args,message', [
    (['--num', '0'], '--num must be >= 1, got 0'),
    (['--cell', '0'], '--cell must be >= 16 pixels, got 0'),
    (['--out', 'grid.txt'], "--out 'grid.txt' must be a .png or .jpg file"),
])
def test_bad_arguments(args, message, toy_data_root):
    with pytest.raises(SystemExit, match=message):
        browse_mixup.main([f'{CONFIGS}/yolov3_mixup.py', '--toy', 'tiny',
                           '--toy-data', toy_data_root] + args)


def test_a_box_is_drawn_at_the_opacity_of_its_weight():
    """Weight 1: the box's full colour; weight 0.5: half of it over black
    (label 1's green, 200, at 0.5 is 100)."""
    sample = DetDataSample()
    sample.gt_instances = InstanceData(
        bboxes=HorizontalBoxes(torch.tensor([[2., 2., 20., 20.],
                                             [10., 24., 30., 30.]])),
        labels=torch.tensor([0, 1]), weights=torch.tensor([1.0, 0.5]))
    packed = dict(inputs=torch.zeros(3, 32, 32, dtype=torch.uint8),
                  data_samples=sample)
    cell = browse_mixup.draw_sample(packed, ('a', 'b'), 32)
    # rows 0-15 are the caption; the image starts at row 16
    assert cell[16 + 10, 2].tolist() == [0, 0, 255]  # left edge, weight 1
    assert cell[16 + 27, 30].tolist() == [0, 100, 0]  # right edge, 0.5
