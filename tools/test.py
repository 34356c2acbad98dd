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
    parser.add_argument(
        '--tta',
        action='store_true',
        help='test-time augmentation: the config\'s tta_model and '
        'tta_pipeline, or mmdet\'s defaults (horizontal flip, NMS at 0.5)')
    add_common_args(parser)
    return parser.parse_args(argv)


def apply_tta(cfg):
    """Wrap the model in the config's ``tta_model`` and test on its
    ``tta_pipeline``, as mmdet's ``tools/test.py --tta`` does, with the same
    defaults (and warnings) where the config has none."""
    if 'tta_model' not in cfg:
        warnings.warn('Cannot find ``tta_model`` in config, '
                      'we will set it as default.')
        cfg.tta_model = dict(
            type='DetTTAModel',
            tta_cfg=dict(
                nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    test_data_cfg = cfg.test_dataloader.dataset
    while 'dataset' in test_data_cfg:  # the wrapped dataset's pipeline
        test_data_cfg = test_data_cfg['dataset']
    if 'tta_pipeline' not in cfg:
        warnings.warn('Cannot find ``tta_pipeline`` in config, '
                      'we will set it as default.')
        cfg.tta_pipeline = deepcopy(test_data_cfg.pipeline)
        cfg.tta_pipeline[-1] = dict(
            type='TestTimeAug',
            transforms=[
                [
                    dict(type='RandomFlip', prob=1.),
                    dict(type='RandomFlip', prob=0.)
                ],
                [
                    dict(
                        type='PackDetInputs',
                        meta_keys=('img_id', 'img_path', 'ori_shape',
                                   'img_shape', 'scale_factor', 'flip',
                                   'flip_direction'))
                ],
            ])
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    test_data_cfg.pipeline = cfg.tta_pipeline
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


if __name__ == '__main__':
    main()
