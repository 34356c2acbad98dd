"""Ablation runner: train several configs with the same seed and schedule,
evaluate COCO AP, and report them as the papers' ablation tables do.

Each run is a separate ``tools/train.py`` process, so a run that diverges or
crashes is reported as such (``n/a``) without taking the others down.
"""
import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from .loss_keys import loss_kind
from .toy import TOY_DATA_ROOT

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(REPO, 'tools', 'train.py')

METRICS = (('AP', 'coco/bbox_mAP'), ('AP50', 'coco/bbox_mAP_50'),
           ('AP75', 'coco/bbox_mAP_75'), ('AP_S', 'coco/bbox_mAP_s'),
           ('AP_M', 'coco/bbox_mAP_m'), ('AP_L', 'coco/bbox_mAP_l'))
# logged iterations averaged for the curves and the final losses
SMOOTH = 5


def read_scalars(work_dir: str, exclude: Sequence[str] = ()) -> List[Dict]:
    """The records of a run's latest ``<timestamp>/vis_data/scalars.json``
    under ``work_dir`` (mmengine writes one folder per launch), leaving out
    the launch folders named in ``exclude``; ``[]`` when there is none."""
    files = sorted(
        f for f in glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json'))
        if osp.basename(osp.dirname(osp.dirname(f))) not in exclude)
    if not files:
        return []
    with open(files[-1]) as f:
        return [json.loads(line) for line in f if line.strip()]


def split_losses(record: Dict) -> Dict[str, float]:
    """Sum a log record's losses into classification and regression, the
    terms the health hook's ratios use (:mod:`.loss_keys`)."""
    sums = dict(cls=0.0, reg=0.0)
    for key, value in record.items():
        kind = loss_kind(key)
        if kind is not None:
            sums[kind] += value
    return sums


def train_and_eval(config: str,
                   work_dir: str,
                   toy: Optional[str] = 'small',
                   toy_data: Optional[str] = None,
                   cfg_options: Optional[Dict[str, str]] = None,
                   seed: int = 0,
                   extra_args: Sequence[str] = ()) -> Dict:
    """Train ``config`` in a subprocess and collect its results.

    Args:
        config (str): Config path.
        work_dir (str): Where the run writes its logs and checkpoints.
        toy (str, optional): ``--toy`` size, or None for the config as is.
            Defaults to 'small'.
        toy_data (str, optional): Toy dataset root. Defaults to None,
            ``data/toy/`` under the working directory, as tools/train.py
            and mmdet's data roots read it.
        cfg_options (dict, optional): ``--cfg-options`` key=value pairs.
        seed (int): ``randomness.seed``; the same for every row so rows
            differ only by their config. Defaults to 0.
        extra_args (Sequence[str]): More ``tools/train.py`` flags.

    The run logs each logged iteration's own losses
    (``log_processor.window_size=1``), not mmengine's running mean over 50
    iterations: the GuidedLossScaling ratio is logged per iteration, and
    the curves divide one by the other.

    Returns:
        dict: the metrics the last validation returned (mmengine's keys,
        e.g. ``coco/bbox_mAP``; none when it ran no validation),
        ``diverged`` (a non-finite loss or a failed run), ``failed`` (the
        run exited with an error and logged no non-finite loss),
        ``returncode``, ``seconds`` and ``loss_history`` (this launch's
        training records, one per logged iteration).
    """
    # the run starts in the repository: relative paths are the caller's
    config, work_dir = osp.abspath(config), osp.abspath(work_dir)
    toy_data = osp.abspath(TOY_DATA_ROOT if toy_data is None else toy_data)
    options = {'randomness.seed': seed, 'log_processor.window_size': 1,
               **(cfg_options or {})}
    val_json = osp.join(work_dir, 'val_metrics.json')
    cmd = [sys.executable, TRAIN, config, '--work-dir', work_dir,
           '--val-metrics', val_json,
           '--cfg-options'] + [f'{k}={v}' for k, v in options.items()]
    if toy:
        cmd += ['--toy', toy, '--toy-data', toy_data]
    cmd += list(extra_args)
    os.makedirs(work_dir, exist_ok=True)
    # only this launch's results: an earlier launch's stay where they are
    earlier = os.listdir(work_dir)
    if osp.exists(val_json):
        os.remove(val_json)
    start = time.perf_counter()
    with open(osp.join(work_dir, 'ablate_stdout.log'), 'w') as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT,
                              cwd=REPO)
    seconds = time.perf_counter() - start
    history = [r for r in read_scalars(work_dir, exclude=earlier)
               if 'loss' in r]
    # the last validation's own metrics: the logged records repeat a
    # metric an evaluation did not return (COCO AP without detections)
    metrics = {}
    if osp.exists(val_json):
        with open(val_json) as f:
            metrics = json.load(f)
    non_finite = any(not math.isfinite(v) for r in history
                     for k, v in r.items()
                     if k.startswith('loss') and isinstance(v, float))
    return dict(metrics, diverged=non_finite or proc.returncode != 0,
                failed=proc.returncode != 0 and not non_finite,
                returncode=proc.returncode, seconds=seconds,
                loss_history=history, command=' '.join(cmd))


def _smooth(values: List[float], window: int = SMOOTH,
            skip_nan: bool = False) -> List[float]:
    """Trailing mean over up to ``window`` values; with ``skip_nan``, over
    the values among them that are not NaN (NaN if none is)."""
    means = []
    for i in range(len(values)):
        last = values[max(0, i + 1 - window):i + 1]
        if skip_nan:
            last = [v for v in last if not math.isnan(v)]
        means.append(sum(last) / len(last) if last else math.nan)
    return means


def exit_status(results: Sequence[Dict]) -> int:
    """The exit status of a tool that trains several runs: 1 when a run
    failed (an error other than a non-finite loss) or every run diverged;
    a diverged run beside finished ones is a result, 0."""
    failed = any(r.get('failed') for r in results)
    return 1 if failed or all(r['diverged'] for r in results) else 0


def markdown_table(rows: Dict[str, Dict]) -> str:
    """Rows keyed by name -> a Markdown table; diverged rows read n/a. The
    final losses are the mean of the last ``SMOOTH`` logged iterations."""
    head = ['Config'] + [m for m, _ in METRICS] + ['final L_cls',
                                                   'final L_reg', 'time']
    lines = ['| ' + ' | '.join(head) + ' |',
             '|' + '---|' * len(head)]
    for name, r in rows.items():
        if r['diverged']:
            values = ['n/a'] * len(METRICS)
        elif METRICS[0][1] not in r:  # trained, but nothing above score_thr
            values = ['no det.'] * len(METRICS)
        else:
            values = [f'{r[key]:.3f}' for _, key in METRICS]
        curves = loss_curves(r['loss_history'])  # the last point of each
        values += [f"{(curves['cls'] or [math.nan])[-1]:.4g}",
                   f"{(curves['reg'] or [math.nan])[-1]:.4g}",
                   f"{r['seconds'] / 60:.1f} min"]
        lines.append(f'| {name} | ' + ' | '.join(values) + ' |')
    return '\n'.join(lines)


def loss_curves(history: List[Dict]) -> Dict[str, List[float]]:
    """``iter``, ``cls``, ``reg`` and, for one GuidedLossScaling group,
    ``cls_before_gls`` of a run's records, each the trailing mean of
    ``SMOOTH`` logged iterations."""
    split = [split_losses(rec) for rec in history]
    curves = dict(iter=[rec.get('iter', i) for i, rec in enumerate(history)],
                  cls=_smooth([s['cls'] for s in split]),
                  reg=_smooth([s['reg'] for s in split]))
    ratios = [k for k in history[0] if k.startswith('gls_')] if history \
        else []
    if len(ratios) == 1:
        # GuidedLossScaling logs the scaled L_cls (equal to L_reg); dividing
        # by the same iteration's ratio recovers the CE loss it was built
        # from, before the smoothing. It logs ratio 0 where it had none (no
        # positives, or L_reg = 0, as in a box loss ramped up from weight 0):
        # there the CE loss is unknown and left out of the mean
        curves['cls_before_gls'] = _smooth(
            [s['cls'] / rec[ratios[0]] if rec.get(ratios[0], 0) > 0
             else math.nan for s, rec in zip(split, history)],
            skip_nan=True)
    return curves


def plot_losses(rows: Dict[str, Dict], out: str, columns: int = 3) -> None:
    """Classification against regression loss over iterations, one panel
    per row (the Sampling-Free paper's Fig. 3), ``columns`` panels to a
    line of the figure, each curve the trailing mean of ``SMOOTH`` logged
    iterations."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    ncols = min(columns, len(rows))
    nrows = -(-len(rows) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols,
                                                    3.4 * nrows),
                             squeeze=False, sharey=True)
    for ax, (name, r) in zip(axes.flat, rows.items()):
        curves = loss_curves(r['loss_history'])
        its = curves['iter']
        ax.plot(its, curves['reg'], color='C1', label='regression')
        if 'cls_before_gls' in curves:
            # GLS makes L_cls equal L_reg: dotted, so that both show
            ax.plot(its, curves['cls'], ':', color='C0',
                    label='classification after GLS (= regression)')
            ax.plot(its, curves['cls_before_gls'], '--', color='C0',
                    label='classification before GLS')
        else:
            ax.plot(its, curves['cls'], color='C0', label='classification')
        ax.set_yscale('log')
        status = ' (failed)' if r.get('failed') else \
            ' (diverged)' if r['diverged'] else ''
        ax.set_title(name + status, fontsize=10)
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes.flat[len(rows):]:  # an unfilled last line
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(f'training loss (mean of {SMOOTH} logged its.)')
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
