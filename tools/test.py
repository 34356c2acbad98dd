"""Evaluate a checkpoint: mmdet's ``tools/test.py`` plus ``--toy``.

Example:
    python tools/test.py configs/retinanet_ce_sf.py work_dirs/x/epoch_12.pth
"""
import argparse
import sys
import warnings
from copy import deepcopy

from mmengine.config import ConfigDict

from mmdet.engine.hooks.utils import trigger_visualization_hook
from mmdet_freebies.utils.cli import (UserInputError, add_common_args,
                                      check_checkpoint, check_data,
                                      finish_distributed, load_config,
                                      runner_from_cfg)


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
    parser.add_argument(
        '--tta',
        action='store_true',
        help='test-time augmentation: the config\'s tta_model and '
        'tta_pipeline, or mmdet\'s defaults (horizontal flip, NMS at 0.5)')
    add_common_args(parser)
    return parser.parse_args(argv)


# mmdet's defaults for configs without TTA settings (its tools/test.py)
DEFAULT_TTA_MODEL = dict(
    type='DetTTAModel',
    tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
FLIP_TTA = dict(
    type='TestTimeAug',
    transforms=[[dict(type='RandomFlip', prob=1.),
                 dict(type='RandomFlip', prob=0.)],
                [dict(type='PackDetInputs',
                      meta_keys=('img_id', 'img_path', 'ori_shape',
                                 'img_shape', 'scale_factor', 'flip',
                                 'flip_direction'))]])


def apply_tta(cfg):
    """Test-time augmentation as mmdet's ``tools/test.py --tta``: the model
    wrapped in ``tta_model`` and tested on ``tta_pipeline``. A config
    without them gets mmdet's defaults, with a warning: a horizontal flip
    (the test pipeline's packer replaced by ``TestTimeAug``) merged by NMS
    at IoU 0.5."""
    test_set = cfg.test_dataloader.dataset
    while 'dataset' in test_set:  # a wrapper: the pipeline is inside
        test_set = test_set.dataset
    if 'tta_model' not in cfg:
        warnings.warn('--tta: the config has no tta_model; using mmdet\'s '
                      f'default {DEFAULT_TTA_MODEL}')
        cfg.tta_model = deepcopy(DEFAULT_TTA_MODEL)
    if 'tta_pipeline' not in cfg:
        warnings.warn('--tta: the config has no tta_pipeline; using its '
                      'test pipeline with mmdet\'s default flip TestTimeAug '
                      'in place of the last transform '
                      f'({test_set.pipeline[-1].type})')
        cfg.tta_pipeline = deepcopy(test_set.pipeline)[:-1] + [
            deepcopy(FLIP_TTA)]
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    test_set.pipeline = cfg.tta_pipeline
    return cfg


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
    if args.tta:
        cfg = apply_tta(cfg)
    if args.out:
        cfg.test_evaluator = [cfg.test_evaluator] if isinstance(
            cfg.test_evaluator, dict) else list(cfg.test_evaluator)
        cfg.test_evaluator.append(
            dict(type='DumpDetResults', out_file_path=args.out))
    runner = runner_from_cfg(cfg)
    runner.test()
    finish_distributed()


if __name__ == '__main__':
    main()
