"""Print the foreground prior pi of a config's dense head on its training
set (Sampling-Free optimal bias), without training or a network forward.

Examples:
    python tools/estimate_prior.py configs/retinanet_ce_obi.py
    python tools/estimate_prior.py configs/yolov3_ce_sf.py --num-images 0
    python tools/estimate_prior.py configs/retinanet_fl.py --toy tiny
"""
import argparse
import json
import os
import os.path as osp
import sys

from mmdet_freebies.utils.cli import (UserInputError, add_common_args,
                                      check_data, load_config)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Estimate the foreground prior of a config')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--num-images',
        type=int,
        default=1000,
        help='training images to count; 0 counts the whole training set '
        '(default: 1000)')
    parser.add_argument('--seed',
                        type=int,
                        default=0,
                        help='seed of the image sample (default: 0)')
    parser.add_argument('--num-workers',
                        type=int,
                        default=None,
                        help='dataloader workers (default: the config\'s)')
    parser.add_argument('--json',
                        metavar='FILE',
                        help='also write the estimate to FILE as JSON')
    add_common_args(parser)
    return parser.parse_args(argv)


def _groups_by_aspect_ratio(loader) -> bool:
    """Whether the training loader's batch sampler is mmdet's
    ``AspectRatioBatchSampler`` (or a subclass)."""
    from mmdet.datasets.samplers import AspectRatioBatchSampler
    from mmdet.registry import DATA_SAMPLERS
    kind = (loader.get('batch_sampler') or {}).get('type')
    if isinstance(kind, str):
        kind = DATA_SAMPLERS.get(kind)
    return isinstance(kind, type) and issubclass(kind,
                                                 AspectRatioBatchSampler)


def _estimate(args):
    from mmdet.registry import DATASETS, MODELS
    from mmdet.utils import register_all_modules

    import mmdet_freebies  # noqa: F401  (registers the pack's modules)
    from mmdet_freebies.models.task_modules.prior_estimator import (
        estimate_prior, prior_to_bias)

    if args.num_images < 0:
        raise UserInputError(f'--num-images must be >= 0, got '
                             f'{args.num_images}')
    if args.num_workers is not None and args.num_workers < 0:
        raise UserInputError(f'--num-workers must be >= 0, got '
                             f'{args.num_workers}')
    cfg = load_config(args)
    check_data(cfg, ['train_dataloader'])
    register_all_modules(init_default_scope=True)
    model = MODELS.build(cfg.model)
    loader = cfg.train_dataloader
    dataset = DATASETS.build(loader.dataset)
    try:
        estimate = estimate_prior(
            model,
            dataset,
            args.num_images or None,
            batch_size=loader.get('batch_size', 2),
            aspect_ratio_groups=_groups_by_aspect_ratio(loader),
            num_workers=(loader.get('num_workers', 0)
                         if args.num_workers is None else args.num_workers),
            seed=args.seed,
            distributed=False,
            progress=True)
    except ValueError as e:
        raise UserInputError(str(e))
    classes = dataset.metainfo.get('classes') or ()
    if len(classes) != estimate.num_classes:  # e.g. the RPN's one class
        classes = [str(c) for c in range(estimate.num_classes)]
    return estimate, classes, prior_to_bias


def main(argv=None):
    args = parse_args(argv)
    try:
        estimate, classes, prior_to_bias = _estimate(args)
    except UserInputError as e:
        sys.exit(f'error: {e}')
    e = estimate
    print(f'head: {e.head_type}  images: {e.num_images}  '
          f'classes: {e.num_classes}  ({e.seconds:.1f} s, '
          f'{e.num_images / max(e.seconds, 1e-9):.1f} img/s)')
    print(f'positives: {e.num_fg:.0f}  valid (pos + neg): '
          f'{e.num_valid:.0f}  fg ratio: {e.fg_ratio:.3e}')
    if e.objectness_prior is not None:
        print(f'objectness prior: {e.objectness_prior:.4e}  bias: '
              f'{prior_to_bias(e.objectness_prior):.4f}')
    if e.objectness_prior is not None and e.num_classes == 1:
        # the one class channel's target over positives is 1: no finite
        # bias, and OptimalBiasInit leaves that channel as initialised
        print('class channel: one class, prior 1, bias left as initialised')
        if e.objectness_prior > 0:
            print(f'conf_thr ~ objectness prior = {e.objectness_prior:.2e}')
    elif e.prior > 0:
        print(f'prior pi = {e.prior:.4e}  bias = {prior_to_bias(e.prior):.4f}')
        # a CE-trained, optimally initialised head scores about pi
        if e.objectness_prior is not None:
            # YOLOv3 filters objectness by conf_thr; score_thr is for the
            # class-conditional scores
            print(f'conf_thr ~ objectness prior = {e.objectness_prior:.2e}')
        elif e.num_classes > 1:
            print(f'score_thr ~ pi * C = {e.prior * e.num_classes:.2e}')
    else:
        print('prior pi = 0: no positives in the sample')
    width = max(len('class'), *(len(c) for c in classes))
    print(f'{"class":>{width}} {"pi_c":>11} {"positives":>10}')
    for name, p, n in zip(classes, e.per_class_prior, e.fg_per_class):
        print(f'{name:>{width}} {p:>11.4e} {n:>10.1f}')
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(e.to_dict(), f, indent=2)


if __name__ == '__main__':
    main()
