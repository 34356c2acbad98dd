"""Train configs side by side with one seed and schedule; print the COCO AP
table (the Sampling-Free paper's Table IV style) and plot the losses.

Example (``make demo``):
    python tools/ablate.py configs/retinanet_fl.py configs/retinanet_ce.py \
        configs/retinanet_ce_sf.py --toy small --work-dir work_dirs/demo

Exits 1 when a run failed (an error other than a non-finite loss, e.g. a
broken config or a TrainingHealthHook stop) or every run diverged; a
diverged row beside finished ones is a result (on COCO the paper's plain CE
row diverges), exit 0.
"""
import argparse
import json
import os
import os.path as osp
import sys

from mmengine.config import DictAction

from mmdet_freebies.utils.ablation import (exit_status, markdown_table,
                                           plot_losses, train_and_eval)
from mmdet_freebies.utils.cli import (UserInputError, check_toy_data,
                                      toy_size)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--work-dir', default='work_dirs/ablate')
    parser.add_argument('--toy', nargs='?', const='small', default=None,
                        metavar='SIZE', type=toy_size)
    parser.add_argument('--toy-data', default=None,
                        help='toy dataset root (default: data/toy/ in the '
                        'working directory, as tools/train.py)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        default={})
    args = parser.parse_args(argv)
    try:
        check_toy_data(args.toy, args.toy_data)
    except UserInputError as e:
        parser.error(str(e))
    for path in args.configs:
        if not osp.isfile(path):
            parser.error(f'config file {path!r} does not exist')
    # a row is named, and gets its work dir, by the config's file name
    names = [osp.splitext(osp.basename(p))[0] for p in args.configs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        parser.error(f'configs named alike would share a row and a work '
                     f'dir: {repeated}; rename one, or run them apart')

    os.makedirs(args.work_dir, exist_ok=True)
    plot = osp.join(args.work_dir, 'losses.png')

    def write(rows):
        """The table, results and plot of the rows so far: written after
        every row, so an interrupted ablation keeps its finished rows."""
        # the results first: a failing table or plot must not lose them
        with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
            json.dump({k: {m: v for m, v in r.items() if m != 'loss_history'}
                       for k, r in rows.items()}, f, indent=1)
        with open(osp.join(args.work_dir, 'table.md'), 'w') as f:
            f.write(markdown_table(rows) + '\n')
        plot_losses(rows, plot)

    rows = {}
    for path in args.configs:
        name = osp.splitext(osp.basename(path))[0]
        print(f'[ablate] training {name} ...', flush=True)
        rows[name] = train_and_eval(
            path, osp.join(args.work_dir, name), toy=args.toy,
            toy_data=args.toy_data, cfg_options=args.cfg_options,
            seed=args.seed)
        r = rows[name]
        status = 'failed, see the log' if r.get('failed') else \
            'diverged' if r['diverged'] else 'ok'
        print(f"[ablate] {name}: {status} in {r['seconds']:.0f} s "
              f"(log: {osp.join(args.work_dir, name, 'ablate_stdout.log')})",
              flush=True)
        write(rows)

    print('\n' + markdown_table(rows) + '\n')
    print(f'loss curves: {plot}')
    failed = [name for name, r in rows.items() if r.get('failed')]
    if failed:
        print(f'[ablate] failed: {failed}', flush=True)
    return exit_status(list(rows.values()))


if __name__ == '__main__':
    sys.exit(main())
