"""Plot TrainingHealthHook's signals of one or more runs side by side.

Reads each work dir's latest ``vis_data/scalars.json`` and draws, against
the iteration, the classification-to-regression loss ratio of every head
(``health/ratio_*``), the gradient norm of every monitored classification
layer (``health/grad_norm_*``) and the highest foreground score
(``health/fg_max``): one panel per signal, one line per run and key.

Example:
    python tools/plot_health.py work_dirs/ce work_dirs/fl \
        --labels retinanet_ce retinanet_fl --out health.png
"""
import argparse
import os.path as osp
import sys

from mmdet_freebies.utils.ablation import read_scalars

# (key prefix, title, log scale)
PANELS = (('health/ratio_', 'cls / reg loss ratio', True),
          ('health/grad_norm_', 'grad norm of the cls layer', True),
          ('health/fg_max', 'highest foreground score', False))
# TrainingHealthHook's default ratio_range, drawn where the ratios come near
RATIO_BOUNDS = (0.05, 5)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', nargs='+', help='training work dirs')
    parser.add_argument('--labels', nargs='+',
                        help='one legend label per work dir (default: the '
                        "work dir's name)")
    parser.add_argument('--out', default='health.png',
                        help='output PNG path')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    labels = args.labels or [osp.basename(osp.normpath(d))
                             for d in args.work_dirs]
    if len(labels) != len(args.work_dirs):
        sys.exit(f'--labels: {len(labels)} labels for '
                 f'{len(args.work_dirs)} work dirs')
    if not args.out.endswith('.png'):
        sys.exit(f'--out {args.out!r} must be a .png file')
    runs = {}
    for work_dir, label in zip(args.work_dirs, labels):
        records = [r for r in read_scalars(work_dir)
                   if any(k.startswith('health/') for k in r)]
        if not records:
            sys.exit(f'{work_dir}: no health/ scalars in '
                     '*/vis_data/scalars.json (was TrainingHealthHook on?)')
        runs[label] = records

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for ax, (prefix, title, log) in zip(axes, PANELS):
        for i, (label, records) in enumerate(runs.items()):
            keys = sorted({k for r in records for k in r
                           if k.startswith(prefix)})
            for j, key in enumerate(keys):
                its = [r['iter'] for r in records if key in r]
                name = key[len(prefix):]
                ax.plot(its, [r[key] for r in records if key in r],
                        marker='.', color=f'C{i}',
                        linestyle=('-', '--', ':', '-.')[j % 4],
                        label=f'{label} {name}' if name else label)
        if prefix == 'health/ratio_':
            low, high = ax.get_ylim()
            for bound in RATIO_BOUNDS:
                if low / 2 <= bound <= high * 2:
                    ax.axhline(bound, color='grey', linestyle='--',
                               label=f'default bound {bound}')
        if log:
            ax.set_yscale('log')
        ax.set_title(title, fontsize=9)
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
