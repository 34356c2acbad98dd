"""tools/plot_health.py: one panel per health signal, one line per run and
key, the hook's bounds of each head, and clear errors for runs without the
hook."""
import json

import cv2
import pytest
from matplotlib.figure import Figure

from helpers import import_tool

plot_health = import_tool('plot_health')


def _work_dir(root, name, records):
    vis = root / name / '20261121_000000' / 'vis_data'
    vis.mkdir(parents=True)
    with open(vis / 'scalars.json', 'w') as f:
        for record in records:
            f.write(json.dumps(record) + '\n')
    return str(root / name)


def _health(it, ratio, head='det'):
    return {'iter': it, 'loss': 1.0, f'health/ratio_{head}': ratio,
            'health/grad_norm_retina_cls': 0.3, 'health/fg_max': 0.01}


@pytest.fixture
def saved(monkeypatch):
    """The figures plot_health saves, with their files still written."""
    figures = []
    save = Figure.savefig

    def spy(fig, *args, **kwargs):
        figures.append(fig)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, 'savefig', spy)
    return figures


def _labels(ax):
    return [line.get_label() for line in ax.lines]


def test_plots_every_run_and_key(tmp_path, saved, capsys):
    ce = _work_dir(tmp_path, 'ce', [_health(i, 8.0) for i in (1, 2, 3)])
    rcnn = _work_dir(tmp_path / 'b', 'ce',
                     [dict(_health(i, 2.0), **{'health/ratio_rpn': 60.0})
                      for i in (1, 2)])
    out = str(tmp_path / 'new_dir' / 'health.png')
    assert plot_health.main([ce, rcnn, '--labels', 'CE', 'RCNN', '--out',
                             out]) == 0
    ratio, grad, score = saved[0].axes
    # the bounds within 2x of the ratios (2 to 60): det's 5, the RPN's 100
    assert _labels(ratio) == ['CE det', 'RCNN det', 'RCNN rpn',
                              'default bound 5 (det)',
                              'default bound 100 (rpn)']
    assert [list(line.get_ydata()) for line in ratio.lines[:3]] == [
        [8.0] * 3, [2.0] * 2, [60.0] * 2]
    assert _labels(grad) == ['CE retina_cls', 'RCNN retina_cls']
    assert _labels(score) == ['CE', 'RCNN']
    # three panels of 4.2 x 3.4 inches at 110 dpi, in a new folder
    assert cv2.imread(out).shape == (374, 1386, 3)
    assert f'wrote {out}' in capsys.readouterr().out


def test_a_two_stage_run_plots_a_score_line_per_layer(tmp_path, saved):
    """TrainingHealthHook suffixes the scores of several layers
    (health/fg_max_rpn_cls): the legend names the layers."""
    run = _work_dir(tmp_path, 'frcnn', [
        {'iter': i, 'health/ratio_det': 2.0, 'health/fg_max_rpn_cls': 0.3,
         'health/fg_max_fc_cls': 0.2} for i in (1, 2)])
    assert plot_health.main([run, '--out', str(tmp_path / 'h.png')]) == 0
    assert _labels(saved[0].axes[2]) == ['frcnn fc_cls', 'frcnn rpn_cls']


def test_errors(tmp_path):
    run = _work_dir(tmp_path, 'run', [_health(1, 2.0)])
    same_name = _work_dir(tmp_path / 'b', 'run', [_health(1, 2.0)])
    plain = _work_dir(tmp_path, 'plain', [{'iter': 1, 'loss': 1.0}])
    for args, message in (
        ([run, plain], r'^error: \S*plain: no health/ scalars'),
        ([run, str(tmp_path / 'missing')], 'missing: no '),
        ([run, same_name], r"labels \['run', 'run'\] repeat"),
        ([run, '--labels', 'a', 'b'], '2 labels for 1 work dirs'),
        ([run, '--out', 'h.jpg'], "--out 'h.jpg' must be a .png"),
    ):
        with pytest.raises(SystemExit, match=message):
            plot_health.main(args)
