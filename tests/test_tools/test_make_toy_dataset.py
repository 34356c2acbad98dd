"""tools/make_toy_dataset.py: writes the dataset with the given options and
rejects bad ones through argparse."""
import json

import pytest

from helpers import import_tool

make_toy_dataset = import_tool('make_toy_dataset')


def test_writes_the_dataset(tmp_path, capsys):
    make_toy_dataset.main(['--out', str(tmp_path), '--num-train', '3',
                           '--num-val', '2', '--img-size', '48x32',
                           '--num-classes', '2', '--min-visible', '0.8'])
    train = json.load(open(tmp_path / 'annotations' / 'train.json'))
    assert len(train['images']) == 3
    assert {(i['width'], i['height']) for i in train['images']} == {(48, 32)}
    assert len(train['categories']) == 2
    assert 'train: ' in capsys.readouterr().out


def test_the_tests_fixture_set_is_made_by_the_flags(tmp_path, toy_data_root):
    """docs/failure_patterns.md recreates the tests' fixture set (conftest's
    make_toy_dataset(min_size=6, ...)) with these flags: the same files."""
    make_toy_dataset.main(['--out', str(tmp_path), '--num-train', '16',
                           '--num-val', '8', '--img-size', '64x64',
                           '--min-size', '6'])
    for split in ('train', 'val'):
        name = f'annotations/{split}.json'
        assert (tmp_path / name).read_bytes() == open(
            toy_data_root + name, 'rb').read()


@pytest.mark.parametrize('args, message', [
    (['--min-visible', '1.5'], '--min-visible 1.5 must be in'),
    (['--img-size', '64'], '--img-size must look like 128x128'),
    (['--num-classes', '9'], '--num-classes 9'),
    (['--img-size', '0x0'], '--img-size (0, 0) must be at least 16 px'),
    (['--min-size', '0'], '--min-size 0.0 must be in (0, 102.4]'),
    (['--seed', '-1'], '--seed -1 must be an int >= 0'),
])
def test_bad_options(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit):
        make_toy_dataset.main(['--out', str(tmp_path)] + args)
    assert message in capsys.readouterr().err
