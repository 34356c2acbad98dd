"""Train a detector: mmdet's ``tools/train.py`` plus ``--toy``.

Examples:
    python tools/train.py configs/retinanet_ce_sf.py
    python tools/train.py configs/retinanet_ce_sf.py --toy --work-dir w/
    python tools/train.py configs/retinanet_ce_sf.py --resume
"""
import argparse
import json
import numbers
import os
import os.path as osp
import sys

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from mmdet_freebies.utils.cli import (UserInputError, add_common_args,
                                      check_checkpoint, check_data,
                                      check_pretrained, finish_distributed,
                                      load_config, runner_from_cfg)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true',
                        help='enable automatic-mixed-precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='enable automatically scaling LR')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or without a path from the '
        'latest checkpoint in the work directory')
    parser.add_argument(
        '--val-metrics', metavar='JSON',
        help='write the metrics of each validation to this file, replacing '
        "the last: only that validation's (mmengine's logs repeat a metric "
        'an evaluation did not return, e.g. COCO AP without detections)')
    add_common_args(parser)
    return parser.parse_args(argv)


class ValMetricsWriter(Hook):
    """Writes the evaluator's metrics of each validation to ``path``."""
    priority = 'LOWEST'

    def __init__(self, path):
        self.path = path

    def after_val_epoch(self, runner, metrics=None):
        if is_main_process():
            # its folder may be the work dir, made by the runner, or a
            # mistyped one: made here rather than failing after training
            os.makedirs(osp.dirname(osp.abspath(self.path)), exist_ok=True)
            with open(self.path, 'w') as f:
                json.dump({k: float(v) if isinstance(v, numbers.Real) else
                           str(v) for k, v in (metrics or {}).items()}, f)


def build_runner(args):
    cfg = load_config(args)
    if args.amp:
        if not torch.cuda.is_available():
            raise UserInputError('--amp needs CUDA (mmengine autocasts on '
                                 'the GPU only); drop it on a CPU')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise UserInputError('--auto-scale-lr needs '
                                 'auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        check_checkpoint(args.resume, '--resume checkpoint')
        cfg.resume = True
        cfg.load_from = args.resume
    check_data(cfg)
    check_pretrained(cfg)
    runner = runner_from_cfg(cfg)
    if args.val_metrics:
        runner.register_hook(ValMetricsWriter(args.val_metrics))
    return runner


def main(argv=None):
    args = parse_args(argv)
    try:
        runner = build_runner(args)
    except UserInputError as e:
        sys.exit(f'error: {e}')
    runner.train()
    finish_distributed()


if __name__ == '__main__':
    main()
