"""tools/plot_health.py: one panel per health signal from each run's
scalars.json, and clear errors for runs without the hook."""
import json
import os.path as osp
import sys

import cv2
import pytest

from helpers import REPO

sys.path.insert(0, osp.join(REPO, 'tools'))
try:
    import plot_health
finally:
    sys.path.pop(0)


def _work_dir(root, name, records):
    vis = root / name / '20261121_000000' / 'vis_data'
    vis.mkdir(parents=True)
    with open(vis / 'scalars.json', 'w') as f:
        for record in records:
            f.write(json.dumps(record) + '\n')
    return str(root / name)


def _health(it, ratio):
    return {'iter': it, 'loss': 1.0, 'health/ratio_det': ratio,
            'health/grad_norm_retina_cls': 0.3, 'health/fg_max': 0.01}


def test_plots_every_run(tmp_path, capsys):
    ce = _work_dir(tmp_path, 'ce', [_health(i, 8.0) for i in (1, 2, 3)])
    fl = _work_dir(tmp_path, 'fl', [_health(i, 1.5) for i in (1, 2, 3)])
    out = str(tmp_path / 'health.png')
    assert plot_health.main([ce, fl, '--labels', 'CE', 'FL', '--out',
                             out]) == 0
    # three panels of 4.2 x 3.4 inches at 110 dpi
    assert cv2.imread(out).shape == (374, 1386, 3)
    assert f'wrote {out}' in capsys.readouterr().out


def test_errors(tmp_path):
    run = _work_dir(tmp_path, 'run', [_health(1, 2.0)])
    plain = _work_dir(tmp_path, 'plain', [{'iter': 1, 'loss': 1.0}])
    with pytest.raises(SystemExit, match='plain: no health/ scalars'):
        plot_health.main([run, plain])
    with pytest.raises(SystemExit, match='2 labels for 1 work dirs'):
        plot_health.main([run, '--labels', 'a', 'b'])
    with pytest.raises(SystemExit, match="--out 'h.jpg' must be a .png"):
        plot_health.main([run, '--out', 'h.jpg'])
