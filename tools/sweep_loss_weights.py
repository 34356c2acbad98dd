"""Sweep one loss weight: train a config once per value and tabulate AP and
the detection error counts, as the face-detection training-failure study
swept the class:box weight ratio (0.01 ... 10).

Examples:
    python tools/sweep_loss_weights.py configs/retinanet_fl.py \
        --key model.bbox_head.loss_bbox.loss_weight \
        --values 0.01,0.05,0.1,0.2,0.5,1,2,5,10 --toy
"""
import argparse
import math
import os
import os.path as osp
import sys
from typing import Dict, List, Sequence

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# (column, metric key) of the table; det_err/* come from
# DetectionErrorMetric, which the sweep adds to the config's val_evaluator.
COLUMNS = (('AP', 'coco/bbox_mAP'), ('AP50', 'coco/bbox_mAP_50'),
           ('AP_S', 'coco/bbox_mAP_s'), ('TP', 'det_err/tp'),
           ('FP', 'det_err/fp'), ('FN', 'det_err/fn'),
           ('precision', 'det_err/precision'),
           ('recall', 'det_err/recall'), ('mean IoU', 'det_err/mean_iou'),
           ('FP small', 'det_err/fp_small'))
_COUNTS = ('TP', 'FP', 'FN', 'FP small')


def parse_values(text: str) -> List[float]:
    """'0.01,0.05,1' -> [0.01, 0.05, 1.0]; positive values only (log axis),
    distinct as run names (``%g``, which name the work dirs and rows)."""
    words = [v.strip() for v in text.split(',') if v.strip()]
    try:
        values = [float(v) for v in words]
    except ValueError:
        raise ValueError(f'--values must be comma-separated numbers, got '
                         f'{text!r}') from None
    if not values or any(not 0 < v < math.inf for v in values):
        raise ValueError(f'--values must be positive and finite (log '
                         f'axis), got {text!r}')
    names = [f'{v:g}' for v in values]
    repeated = {n: [w for w, m in zip(words, names) if m == n]
                for n in names if names.count(n) > 1}
    if repeated:
        same = '; '.join(f"{', '.join(ws)} -> {n!r}"
                         for n, ws in repeated.items())
        raise ValueError(
            f'--values {text!r} name runs alike ({same}): they would share '
            'a row and a work dir; drop the repeats, or make the values '
            'differ in their first 6 significant digits')
    return values


def check_key(cfg, key: str) -> None:
    """Raise ``ValueError`` unless ``key`` (dotted, list indices as numbers)
    names a number in the ``Config`` ``cfg``: ``--cfg-options`` would
    silently add a misspelt key, and every run of the sweep would be the
    same."""
    node, path = cfg.to_dict(), []
    for part in key.split('.'):
        path.append(part)
        if isinstance(node, (list, tuple)) and part.isdigit() and int(
                part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise ValueError(f'--key {key!r}: the config has no '
                             f'{".".join(path)!r}')
    from mmdet_freebies.utils.checks import is_real
    if not is_real(node):
        raise ValueError(f'--key {key!r} holds {node!r}, not a number')
    # LossWeightScheduleHook sets the weight every iteration
    for hook in cfg.get('custom_hooks') or []:
        if hook.get('type') != 'LossWeightScheduleHook':
            continue
        for schedule in hook.get('schedules', []):
            if key == f"model.{schedule.get('loss')}.loss_weight":
                raise ValueError(
                    f'--key {key!r} is scheduled by the config\'s '
                    'LossWeightScheduleHook, which would set it every '
                    'iteration whatever the sweep gives it')


def write_sweep_config(cfg, out: str, score_thr: float) -> str:
    """A child config of the loaded ``Config`` ``cfg`` (its file is the
    ``_base_``) whose ``val_evaluator`` also runs ``DetectionErrorMetric``;
    returns its path."""
    config = cfg.filename
    evaluator = cfg.get('val_evaluator')
    if evaluator is None:
        raise ValueError(f'{config!r} has no val_evaluator')
    evaluators = evaluator if isinstance(evaluator, list) else [evaluator]
    evaluators = [e.to_dict() if hasattr(e, 'to_dict') else dict(e)
                  for e in evaluators
                  if e.get('type') != 'DetectionErrorMetric']
    evaluators.append(dict(type='DetectionErrorMetric', score_thr=score_thr))
    with open(out, 'w') as f:
        f.write(f'_base_ = {osp.abspath(config)!r}\n'
                '# Detection error counts beside the base evaluator.\n'
                f'val_evaluator = {evaluators!r}\n')
    return out


def markdown_table(key: str, values: Sequence[float],
                   results: Sequence[Dict]) -> str:
    """One row per value; a diverged or failed run reads n/a, a metric a
    finished run did not report (no detection to score) reads no det."""
    head = [key.rpartition('.')[2] if '.' in key else key] + \
        [c for c, _ in COLUMNS]
    lines = [f'Sweep of `{key}`', '',
             '| ' + ' | '.join(head) + ' |', '|' + '---:|' * len(head)]
    for value, r in zip(values, results):
        cells = [f'{value:g}']
        for column, metric in COLUMNS:
            v = r.get(metric)
            if r.get('diverged'):
                cells.append('n/a')
            elif v is None:  # CocoMetric reports nothing without detections
                cells.append('no det.')
            else:
                cells.append(f'{int(v)}' if column in _COUNTS
                             else f'{v:.3f}')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def plot_sweep(key: str, values: Sequence[float], results: Sequence[Dict],
               out: str) -> None:
    """AP and AP50 against the weight on a log x axis; failed runs and runs
    without any detection are marked at 0."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, metric, style in (('AP', 'coco/bbox_mAP', 'o-'),
                                 ('AP50', 'coco/bbox_mAP_50', 's--')):
        ys = [math.nan if r.get('diverged') else r.get(metric, math.nan)
              for r in results]
        ax.plot(values, ys, style, label=label)
    # Failed runs, and finished runs whose CocoMetric had no detection to
    # score (it then reports nothing), are marked at 0.
    for label, style, picked in (
            ('diverged / failed', 'rx', [r.get('diverged') for r in results]),
            ('no detections (AP n/a)', 'kv',
             [not r.get('diverged') and 'coco/bbox_mAP' not in r
              for r in results])):
        xs = [v for v, p in zip(values, picked) if p]
        if xs:
            ax.plot(xs, [0] * len(xs), style, ms=9, label=label)
    ax.set_xscale('log')
    ax.set_xlabel(key)
    ax.set_ylabel('COCO box AP')
    ax.grid(alpha=0.3, which='both')
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    from mmdet_freebies.utils.cli import (UserInputError, check_toy_data,
                                          toy_size)
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--key', required=True,
                        help='config key of the weight, e.g. '
                        'model.bbox_head.loss_bbox.loss_weight')
    parser.add_argument('--values', required=True,
                        help='comma-separated weights, e.g. 0.1,0.5,1,2')
    parser.add_argument('--toy', nargs='?', const='small', default=None,
                        metavar='SIZE', type=toy_size,
                        help='run on the toy dataset')
    parser.add_argument('--toy-data', default=None,
                        help='toy dataset root (default: data/toy/ in the '
                        'working directory, as tools/train.py)')
    parser.add_argument('--work-dir', default=None,
                        help='default: work_dirs/sweep_<config name>')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='score threshold of DetectionErrorMetric')
    args = parser.parse_args(argv)
    try:
        check_toy_data(args.toy, args.toy_data)
        args.values = parse_values(args.values)
    except (UserInputError, ValueError) as e:
        parser.error(str(e))
    if not 0 <= args.score_thr <= 1:
        parser.error(f'--score-thr must be in [0, 1], got {args.score_thr}')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    values = args.values
    from mmdet_freebies.utils.cli import UserInputError, read_config
    try:
        cfg = read_config(args.config)
    except UserInputError as e:
        sys.exit(f'error: {e}')
    try:
        check_key(cfg, args.key)
    except ValueError as e:
        sys.exit(f'error: {e}')
    from mmdet_freebies.utils.ablation import exit_status, train_and_eval
    name = osp.splitext(osp.basename(args.config))[0]
    work_dir = osp.abspath(args.work_dir or f'work_dirs/sweep_{name}')
    os.makedirs(work_dir, exist_ok=True)
    config = write_sweep_config(cfg, osp.join(work_dir, f'{name}_sweep.py'),
                                args.score_thr)
    results = []
    for value in values:
        print(f'{args.key}={value:g}: training ...', flush=True)
        r = train_and_eval(config, osp.join(work_dir, f'{value:g}'),
                           toy=args.toy, toy_data=args.toy_data,
                           cfg_options={args.key: value}, seed=args.seed)
        # as the table reads: n/a for a diverged or failed run
        ap = 'n/a' if r['diverged'] else r.get('coco/bbox_mAP', 'no det.')
        print(f"  AP={ap} diverged={r['diverged']}", flush=True)
        results.append(r)
        # after every run, so an interrupted sweep keeps the finished ones
        table = markdown_table(args.key, values[:len(results)], results)
        with open(osp.join(work_dir, 'sweep.md'), 'w') as f:
            f.write(table + '\n')
        plot_sweep(args.key, values[:len(results)], results,
                   osp.join(work_dir, 'sweep.png'))
    print(table)
    print(f'wrote {work_dir}/sweep.md and {work_dir}/sweep.png')
    failed = [v for v, r in zip(values, results) if r.get('failed')]
    if failed:
        print(f'failed: {args.key}={failed}', flush=True)
    return exit_status(results)


if __name__ == '__main__':
    sys.exit(main())
