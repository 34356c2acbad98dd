import json
import os.path as osp
import subprocess

import pytest

from mmdet_freebies.utils import ablation
from mmdet_freebies.utils.ablation import (markdown_table, plot_losses,
                                           split_losses)


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
                  loss_conf=4.0, acc=97.0, gls_ratio_rpn=0.1)
    assert split_losses(record) == dict(cls=8.0, reg=2.75)


def test_markdown_table_marks_diverged_and_empty_rows():
    table = markdown_table({'ok': _row(), 'bad': _row(diverged=True),
                            'none': _row(metrics=False)}).splitlines()
    assert table[0].startswith('| Config | AP | AP50 |')
    assert table[2] == ('| ok | 0.250 | 0.500 | 0.200 | 0.100 | 0.300 | '
                        '0.400 | 0.3333 | 0.75 | 1.5 min |')
    assert table[3].startswith('| bad | n/a | n/a |')
    assert table[4].startswith('| none | no det. | no det. |')


def test_plot_losses_writes_png(tmp_path):
    out = tmp_path / 'losses.png'
    plot_losses({'a': _row(), 'b': _row(gls=True)}, str(out))
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


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
    ablation.train_and_eval('my.py', 'work', toy='tiny')  # the default
    assert calls[1][0][calls[1][0].index('--toy-data') + 1] == osp.join(
        ablation.REPO, 'data/toy/')


@pytest.mark.parametrize('loss, returncode, diverged', [
    (1.5, 0, False), (float('nan'), 0, True), (1.5, 1, True)])
def test_train_and_eval_reads_the_runs_scalars(tmp_path, monkeypatch, loss,
                                               returncode, diverged):
    """Metrics come from the non-loss records of the latest launch; a
    non-finite loss or a failed process marks the run diverged."""

    def fake_run(cmd, **kw):
        for stamp, ap in (('20260101_000000', 0.1),
                          ('20260102_000000', 0.3)):  # the latest counts
            vis = tmp_path / 'work' / stamp / 'vis_data'
            vis.mkdir(parents=True)
            (vis / 'scalars.json').write_text(
                json.dumps(dict(loss=2.0, loss_cls=1.0, iter=1)) + '\n'
                + json.dumps(dict(loss=loss, loss_cls=loss, iter=2)) + '\n'
                + json.dumps({'coco/bbox_mAP': ap, 'step': 1}) + '\n')
        return subprocess.CompletedProcess(cmd, returncode)

    monkeypatch.setattr(subprocess, 'run', fake_run)
    r = ablation.train_and_eval('my.py', str(tmp_path / 'work'), toy=None)
    assert r['diverged'] is diverged
    assert r['returncode'] == returncode
    assert r['coco/bbox_mAP'] == 0.3
    assert [h['iter'] for h in r['loss_history']] == [1, 2]
