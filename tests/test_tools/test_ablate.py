"""tools/ablate.py: one training run per config with the same seed and
options, then the table, the loss plot and the results file."""
import json
import os.path as osp

import pytest

from helpers import CONFIGS, import_tool

ablate = import_tool('ablate')


def _row(ap, diverged=False):
    history = [dict(iter=i, loss=2.0 / i, loss_cls=1.0 / i, loss_bbox=1.0 / i)
               for i in (1, 2)]
    metrics = {f'coco/bbox_mAP{s}': ap for s in ('', '_50', '_75', '_s',
                                                  '_m', '_l')}
    return dict(metrics, diverged=diverged, seconds=60.0,
                loss_history=history)


def test_rows_table_plot_and_results(tmp_path, monkeypatch, capsys):
    calls = []

    def train_and_eval(path, work_dir, **kwargs):
        calls.append((path, work_dir, kwargs))
        return _row(0.25) if 'fl' in path else _row(0.0, diverged=True)

    monkeypatch.setattr(ablate, 'train_and_eval', train_and_eval)
    configs = [osp.join(CONFIGS, c) for c in ('retinanet_fl.py',
                                              'retinanet_ce.py')]
    work = str(tmp_path / 'ablate')
    assert ablate.main(configs + ['--toy', 'tiny', '--seed', '3',
                                  '--work-dir', work, '--cfg-options',
                                  'train_cfg.max_epochs=2']) == 0
    assert [c[1] for c in calls] == [osp.join(work, 'retinanet_fl'),
                                     osp.join(work, 'retinanet_ce')]
    for _, _, kwargs in calls:  # every row gets the same options
        assert kwargs == dict(toy='tiny', toy_data=None, seed=3,
                              cfg_options={'train_cfg.max_epochs': 2})
    table = open(osp.join(work, 'table.md')).read()
    assert '| retinanet_fl | 0.250 |' in table
    assert '| retinanet_ce | n/a |' in table
    assert table in capsys.readouterr().out
    results = json.load(open(osp.join(work, 'results.json')))
    assert results['retinanet_ce']['diverged'] is True
    assert 'loss_history' not in results['retinanet_fl']
    with open(osp.join(work, 'losses.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_exit_status_and_missing_config(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ablate, 'train_and_eval',
                        lambda *a, **k: _row(0.0, diverged=True))
    config = osp.join(CONFIGS, 'retinanet_fl.py')
    assert ablate.main([config, '--work-dir', str(tmp_path)]) == 1
    with pytest.raises(SystemExit):
        ablate.main(['configs/nope.py'])
    assert "config file 'configs/nope.py' does not exist" in \
        capsys.readouterr().err
    # two configs of one name would share a row and a work dir
    other = tmp_path / 'elsewhere' / 'retinanet_fl.py'
    other.parent.mkdir()
    other.write_text("_base_ = '%s'\n" % osp.join(CONFIGS, 'retinanet_ce.py'))
    with pytest.raises(SystemExit):
        ablate.main([config, str(other), '--work-dir', str(tmp_path)])
    assert "configs named alike would share a row and a work dir: " \
        "['retinanet_fl']" in capsys.readouterr().err


def test_an_interrupted_ablation_keeps_its_finished_rows(tmp_path,
                                                        monkeypatch):
    def train_and_eval(path, work_dir, **kwargs):
        if 'ce' in path:
            raise KeyboardInterrupt  # Ctrl-C during the second row
        return _row(0.25)

    monkeypatch.setattr(ablate, 'train_and_eval', train_and_eval)
    work = str(tmp_path / 'ablate')
    with pytest.raises(KeyboardInterrupt):
        ablate.main([osp.join(CONFIGS, c) for c in ('retinanet_fl.py',
                                                    'retinanet_ce.py')] +
                    ['--work-dir', work])
    table = open(osp.join(work, 'table.md')).read()
    assert '| retinanet_fl | 0.250 |' in table and 'retinanet_ce' not in table
    assert list(json.load(open(osp.join(work, 'results.json')))) == [
        'retinanet_fl']
    assert osp.isfile(osp.join(work, 'losses.png'))


def test_a_run_that_failed_is_not_called_diverged(tmp_path, monkeypatch,
                                                  capsys):
    monkeypatch.setattr(ablate, 'train_and_eval', lambda *a, **k: dict(
        _row(0.0, diverged=True), failed=True, loss_history=[]))
    config = osp.join(CONFIGS, 'retinanet_fl.py')
    assert ablate.main([config, '--work-dir', str(tmp_path)]) == 1
    assert 'retinanet_fl: failed, see the log' in capsys.readouterr().out


@pytest.mark.parametrize('second,status', [
    (dict(diverged=True), 0),  # CE diverging beside focal loss: a result
    (dict(diverged=True, failed=True, loss_history=[]), 1),  # an error
])
def test_one_row_that_failed_fails_the_ablation(tmp_path, monkeypatch,
                                                capsys, second, status):
    rows = iter([_row(0.25), dict(_row(0.0), **second)])
    monkeypatch.setattr(ablate, 'train_and_eval',
                        lambda *a, **k: next(rows))
    assert ablate.main([osp.join(CONFIGS, c) for c in (
        'retinanet_fl.py', 'retinanet_ce.py')] + [
            '--work-dir', str(tmp_path)]) == status
    assert ("[ablate] failed: ['retinanet_ce']" in capsys.readouterr().out
            ) == bool(status)


def test_toy_data_is_only_read_with_toy(capsys):
    with pytest.raises(SystemExit):
        ablate.main([osp.join(CONFIGS, 'retinanet_fl.py'), '--toy-data',
                     'data/x/'])
    assert "--toy-data 'data/x/' is only read with --toy" in \
        capsys.readouterr().err
