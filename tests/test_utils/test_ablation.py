import json
import math
import os.path as osp
import subprocess

import pytest

from mmdet_freebies.utils import ablation
from mmdet_freebies.utils.ablation import (loss_curves, markdown_table,
                                           plot_losses, split_losses)


def _row(diverged=False, metrics=True, gls=False):
    history = [dict(iter=10 * i, loss=3.0, loss_cls=1.0 / i,
                    loss_bbox=0.5, loss_centerness=0.25,
                    **({'gls_ratio_cls': 0.5} if gls else {}))
               for i in range(1, 4)]
    r = dict(diverged=diverged, seconds=90.0, loss_history=history)
    if metrics:
        r.update({'coco/bbox_mAP': 0.25, 'coco/bbox_mAP_50': 0.5,
                  'coco/bbox_mAP_75': 0.2, 'coco/bbox_mAP_s': 0.1,
                  'coco/bbox_mAP_m': 0.3, 'coco/bbox_mAP_l': 0.4})
    return r


def test_split_losses_sums_cls_and_reg_keys():
    record = dict(loss=9.0, loss_rpn_cls=1.0, loss_rpn_bbox=2.0,
                  loss_cls=3.0, loss_bbox=0.5, loss_centerness=0.25,
                  loss_conf=4.0, loss_dfl=0.125, loss_mask=7.0, acc=97.0,
                  gls_ratio_rpn=0.1)
    # LossWeightScheduleHook logs its weights beside the losses
    record['weight/bbox_head.loss_bbox'] = 0.1
    assert split_losses(record) == dict(cls=8.0, reg=2.875)


def test_markdown_table_marks_diverged_and_empty_rows():
    table = markdown_table({'ok': _row(), 'bad': _row(diverged=True),
                            'none': _row(metrics=False)}).splitlines()
    assert table[0].startswith('| Config | AP | AP50 |')
    # final losses: the mean of the last 5 (here all 3) logged iterations
    assert table[2] == ('| ok | 0.250 | 0.500 | 0.200 | 0.100 | 0.300 | '
                        '0.400 | 0.6111 | 0.75 | 1.5 min |')
    assert table[3].startswith('| bad | n/a | n/a |')
    assert table[4].startswith('| none | no det. | no det. |')


def test_loss_curves_undo_gls_per_iteration_then_smooth():
    """The CE loss before GLS is each iteration's logged L_cls over the
    same iteration's ratio, averaged afterwards: 1 / 0.5 and 3 / 1 give 2
    and 2.5; dividing averages (1 and 2 by 0.5 and 1) would give 2, 2."""
    history = [dict(iter=1, loss_cls=1.0, loss_bbox=1.0, gls_ratio_cls=0.5),
               dict(iter=2, loss_cls=3.0, loss_bbox=3.0, gls_ratio_cls=1.0)]
    curves = loss_curves(history)
    assert curves['iter'] == [1, 2]
    assert curves['cls'] == curves['reg'] == [1.0, 2.0]
    assert curves['cls_before_gls'] == [2.0, 2.5]
    # a trailing mean over the last 5 logged iterations
    long = [dict(iter=i, loss_cls=float(i), loss_bbox=1.0)
            for i in range(1, 8)]
    assert loss_curves(long)['cls'] == [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0]
    assert 'cls_before_gls' not in loss_curves(long)


def test_loss_curves_leave_out_iterations_without_a_gls_ratio():
    """GuidedLossScaling logs ratio 0 (and L_cls 0) for a batch without
    positives: the CE loss before GLS is unknown there, not 0 / 0, and the
    trailing mean is over the known points."""
    history = [dict(iter=1, loss_cls=1.0, loss_bbox=1.0, gls_ratio_cls=0.5),
               dict(iter=2, loss_cls=0.0, loss_bbox=0.0, gls_ratio_cls=0.0),
               dict(iter=3, loss_cls=3.0, loss_bbox=3.0, gls_ratio_cls=1.0)]
    curves = loss_curves(history)
    assert curves['cls_before_gls'] == [2.0, 2.0, 2.5]
    assert curves['cls'] == [1.0, 0.5, 4.0 / 3]
    # none known yet: NaN, which the plot leaves blank
    first = loss_curves(history[1:2])['cls_before_gls']
    assert len(first) == 1 and math.isnan(first[0])


def test_plot_losses_writes_png(tmp_path):
    out = tmp_path / 'losses.png'
    plot_losses({'a': _row(), 'b': _row(gls=True)}, str(out))
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_plot_losses_three_panels_a_line_and_gls_curves_labelled(
        tmp_path, monkeypatch):
    """Four rows make two lines of at most three panels (4.2 x 3.4 in at
    110 dpi each), the fourth line's spare panels hidden; a GLS row labels
    its scaled L_cls as equal to L_reg, which it hides otherwise."""
    import matplotlib.image
    from matplotlib.figure import Figure
    figures = []
    savefig = Figure.savefig
    monkeypatch.setattr(Figure, 'savefig', lambda fig, *a, **k: (
        figures.append(fig), savefig(fig, *a, **k)))
    out = str(tmp_path / 'losses.png')
    plot_losses({'a': _row(), 'b': _row(gls=True), 'c': _row(),
                 'd': _row()}, out)
    assert matplotlib.image.imread(out).shape[:2] == (748, 1386)
    axes = figures[0].axes
    assert [ax.get_visible() for ax in axes] == [True] * 4 + [False] * 2

    def labels(ax):
        return [t.get_text() for t in ax.get_legend().get_texts()]

    assert labels(axes[0]) == ['regression', 'classification']
    assert labels(axes[1]) == ['regression',
                               'classification after GLS (= regression)',
                               'classification before GLS']


def test_train_and_eval_paths_are_the_callers(tmp_path, monkeypatch):
    """The run starts in the repository, so a relative config, work dir or
    toy root given from another directory is made absolute first (the
    results are then read where they were written)."""
    calls = []
    monkeypatch.setattr(subprocess, 'run', lambda cmd, **kw: calls.append(
        (cmd, kw)) or subprocess.CompletedProcess(cmd, 0))
    monkeypatch.chdir(tmp_path)
    ablation.train_and_eval('my.py', 'work', toy='tiny', toy_data='toy/')
    cmd, kw = calls[0]
    assert kw['cwd'] == ablation.REPO
    assert cmd[2] == str(tmp_path / 'my.py')
    assert cmd[cmd.index('--work-dir') + 1] == str(tmp_path / 'work')
    assert cmd[cmd.index('--toy-data') + 1] == str(tmp_path / 'toy')
    assert osp.isfile(tmp_path / 'work' / 'ablate_stdout.log')
    # one iteration's losses per log record, not 50-iteration means
    assert 'log_processor.window_size=1' in cmd
    # the default: data/toy/ in the caller's directory, as tools/train.py
    ablation.train_and_eval('my.py', 'work', toy='tiny')
    assert calls[1][0][calls[1][0].index('--toy-data') + 1] == str(
        tmp_path / 'data' / 'toy')


def _launch(work, stamp, losses, ap):
    """A launch folder as mmengine writes it: loss records, then a
    validation record."""
    vis = work / stamp / 'vis_data'
    vis.mkdir(parents=True)
    (vis / 'scalars.json').write_text(''.join(
        json.dumps(dict(loss=v, loss_cls=v, iter=i)) + '\n'
        for i, v in enumerate(losses, 1)) + json.dumps(
            {'coco/bbox_mAP': ap, 'step': 1}) + '\n')


@pytest.mark.parametrize('loss, returncode, diverged, failed', [
    (1.5, 0, False, False), (float('nan'), 0, True, False),
    (1.5, 1, True, True)])
def test_train_and_eval_reads_this_launchs_results(tmp_path, monkeypatch,
                                                   loss, returncode,
                                                   diverged, failed):
    """Metrics are what the last validation returned (--val-metrics), the
    history is this launch's; an earlier launch in the same work dir is
    ignored. A non-finite loss or a failed process marks the run
    diverged."""
    work = tmp_path / 'work'
    _launch(work, '20260101_000000', [9.0, 9.0, 9.0], 0.9)  # earlier
    (work / 'val_metrics.json').write_text('{"coco/bbox_mAP": 0.9}')

    def fake_run(cmd, **kw):
        assert not osp.exists(work / 'val_metrics.json')
        _launch(work, '20260102_000000', [2.0, loss], 0.3)
        with open(cmd[cmd.index('--val-metrics') + 1], 'w') as f:
            json.dump({'coco/bbox_mAP': 0.3}, f)
        return subprocess.CompletedProcess(cmd, returncode)

    monkeypatch.setattr(subprocess, 'run', fake_run)
    r = ablation.train_and_eval('my.py', str(work), toy=None)
    assert r['diverged'] is diverged
    assert r['failed'] is failed  # an error, not a non-finite loss
    assert r['returncode'] == returncode
    assert r['coco/bbox_mAP'] == 0.3
    assert [h['iter'] for h in r['loss_history']] == [1, 2]


def test_train_and_eval_does_not_report_stale_results(tmp_path,
                                                      monkeypatch):
    """A last validation without detections returns no COCO keys, though
    mmengine's log repeats the previous AP: the row reads "no det.". A
    launch that logged nothing gets no results, not the earlier launch's.
    """
    work = tmp_path / 'work'

    def no_detections(cmd, **kw):
        _launch(work, '20260102_000000', [2.0, 1.0], 0.25)  # stale AP
        with open(cmd[cmd.index('--val-metrics') + 1], 'w') as f:
            json.dump({'det_err/tp': 0.0}, f)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, 'run', no_detections)
    r = ablation.train_and_eval('my.py', str(work), toy=None)
    assert 'coco/bbox_mAP' not in r and r['det_err/tp'] == 0
    assert markdown_table({'row': r}).splitlines()[2].startswith(
        '| row | no det. |')
    monkeypatch.setattr(subprocess, 'run', lambda cmd, **kw: (
        subprocess.CompletedProcess(cmd, 1)))  # failed before logging
    r = ablation.train_and_eval('my.py', str(work), toy=None)
    assert r['loss_history'] == [] and 'coco/bbox_mAP' not in r
    assert r['diverged']
