"""Plot TrainingHealthHook's signals of one or more runs side by side.

Reads each work dir's latest ``vis_data/scalars.json`` and draws, against
the iteration, the classification-to-regression loss ratio of every head
(``health/ratio_*``, with the hook's default bounds for that head), the
gradient norm of every monitored classification layer
(``health/grad_norm_*``) and the highest foreground score
(``health/fg_max``): one panel per signal, one line per run and key.

Example:
    python tools/plot_health.py work_dirs/ce work_dirs/fl \
        --labels retinanet_ce retinanet_fl --out health.png
"""
import argparse
import os
import os.path as osp
import sys

from mmdet_freebies.engine.hooks import TrainingHealthHook
from mmdet_freebies.utils.ablation import read_scalars
from mmdet_freebies.utils.cli import UserInputError

# (key prefix, title, log scale). mmengine's logger averages keys named
# like grad_norm over its window, and repeats the last fg_max sample (taken
# every score_interval iterations) until the next: the titles say so.
PANELS = (('health/ratio_', 'cls / reg loss ratio (per iteration)', True),
          ('health/grad_norm_',
           "grad norm of the cls layer\n(running mean over the logger's "
           'window)', True),
          ('health/fg_max', 'highest foreground score\n(held between '
           'samples, every score_interval its.)', False))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', nargs='+', help='training work dirs')
    parser.add_argument('--labels', nargs='+',
                        help='one legend label per work dir (default: the '
                        "work dir's name)")
    parser.add_argument('--out', default='health.png',
                        help='output PNG path')
    return parser.parse_args(argv)


def load_runs(work_dirs, labels):
    """``[(label, health records)]`` per work dir, in order."""
    labels = labels or [osp.basename(osp.normpath(d)) for d in work_dirs]
    if len(labels) != len(work_dirs):
        raise UserInputError(f'--labels: {len(labels)} labels for '
                             f'{len(work_dirs)} work dirs')
    if len(set(labels)) != len(labels):
        raise UserInputError(f'labels {labels} repeat; give each run its '
                             'own with --labels')
    runs = []
    for work_dir, label in zip(work_dirs, labels):
        records = read_scalars(work_dir)
        if not records:
            raise UserInputError(f'{work_dir}: no */vis_data/scalars.json '
                                 '(not a training work dir?)')
        records = [r for r in records
                   if any(k.startswith('health/') for k in r)]
        if not records:
            raise UserInputError(f'{work_dir}: no health/ scalars in its '
                                 'latest scalars.json (was '
                                 'TrainingHealthHook on?)')
        runs.append((label, records))
    return runs


def _draw_ratio_bounds(ax, heads):
    """The hook's default bounds of the plotted heads that lie within a
    factor 2 of the plotted ratios."""
    hook = TrainingHealthHook()
    values = [v for line in ax.lines for v in line.get_ydata()]
    low, high = min(values), max(values)
    by_bound = {}
    for head in sorted(heads):
        for bound in hook.head_ratio_ranges.get(head, hook.ratio_range):
            by_bound.setdefault(bound, []).append(head)
    for i, (bound, names) in enumerate(sorted(by_bound.items())):
        if low / 2 <= bound <= high * 2:
            ax.axhline(bound, color='grey', linestyle=('--', ':')[i % 2],
                       label=f"default bound {bound:g} ({', '.join(names)})")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if not args.out.lower().endswith('.png'):
            raise UserInputError(f'--out {args.out!r} must be a .png file')
        runs = load_runs(args.work_dirs, args.labels)
    except UserInputError as e:
        sys.exit(f'error: {e}')

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for ax, (prefix, title, log) in zip(axes, PANELS):
        heads = set()
        for i, (label, records) in enumerate(runs):
            keys = sorted({k for r in records for k in r
                           if k.startswith(prefix)})
            for j, key in enumerate(keys):
                # (fg_max_fc_cls: the layer after its '_')
                name = key[len(prefix):].lstrip('_')
                heads.add(name)
                # a sample is held until the next: a step, not points
                held = prefix == 'health/fg_max'
                ax.plot([r['iter'] for r in records if key in r],
                        [r[key] for r in records if key in r],
                        marker=None if held else '.', color=f'C{i}',
                        drawstyle='steps-post' if held else 'default',
                        linestyle=('-', '--', ':', '-.')[j % 4],
                        label=f'{label} {name}' if name else label)
        if prefix == 'health/ratio_' and heads:
            _draw_ratio_bounds(ax, heads)
        if log and ax.lines:
            ax.set_yscale('log')
        ax.set_title(title, fontsize=9)
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
