"""Evaluate a checkpoint: mmdet's ``tools/test.py`` plus ``--toy``.

Example:
    python tools/test.py configs/retinanet_ce_sf.py work_dirs/x/epoch_12.pth
"""
import argparse
import sys

from mmdet.engine.hooks.utils import trigger_visualization_hook
from mmdet_freebies.utils.cli import (UserInputError, add_common_args,
                                      check_checkpoint, check_data,
                                      load_config, runner_from_cfg)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump predictions to a pickle file')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved; relative to '
        'the timestamped folder of the work dir, as in mmdet')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args)
        check_checkpoint(args.checkpoint)
        if args.out and not args.out.endswith(('.pkl', '.pickle')):
            raise UserInputError(f'--out {args.out!r} must be a .pkl or '
                                 '.pickle file (DumpDetResults)')
        check_data(cfg, ['test_dataloader'])
    except UserInputError as e:
        sys.exit(f'error: {e}')
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    if args.out:
        cfg.test_evaluator = [cfg.test_evaluator] if isinstance(
            cfg.test_evaluator, dict) else list(cfg.test_evaluator)
        cfg.test_evaluator.append(
            dict(type='DumpDetResults', out_file_path=args.out))
    runner = runner_from_cfg(cfg)
    runner.test()


if __name__ == '__main__':
    main()
