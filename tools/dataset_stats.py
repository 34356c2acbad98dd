"""Dataset balance statistics of a config's training (and validation) set,
as in the EIC study: annotations per image, class histogram and imbalance,
object scale, small and twisted objects, and the anchor fg/bg ratio under
the config's assigner. Prints a Markdown table and writes PNG histograms.

Examples:
    python tools/dataset_stats.py configs/retinanet_fl.py --val
    python tools/dataset_stats.py configs/retinanet_fl.py --toy --val \
        --out-dir work_dirs/stats
"""
import argparse
import copy
import os
import os.path as osp
import sys

from mmdet_freebies.utils.cli import (UserInputError, add_common_args,
                                      check_data, load_config)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file path')
    parser.add_argument('--val', action='store_true',
                        help='also report the validation set beside it')
    parser.add_argument('--out-dir', default=None,
                        help='where the PNGs and stats.md go (default: '
                        '<work dir>/dataset_stats)')
    parser.add_argument('--prior-images', type=int, default=100,
                        help='images for the anchor fg/bg ratio '
                        '(0 to skip it)')
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.prior_images < 0:
        parser.error(f'--prior-images must be >= 0 (0 skips it), got '
                     f'{args.prior_images}')
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args)
        check_data(cfg, ['train_dataloader'] +
                   (['val_dataloader'] if args.val else []))
    except UserInputError as e:
        sys.exit(f'error: {e}')
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules

    from mmdet_freebies.utils.dataset_stats import (anchor_balance,
                                                    collect_annotations,
                                                    compute_stats,
                                                    format_table,
                                                    plot_histograms)
    from mmdet_freebies.utils.toy import find_datasets
    register_all_modules(init_default_scope=True)
    from mmdet_freebies.models.task_modules.prior_estimator import (
        check_num_classes, find_dense_head)

    def refuse(e):
        sys.exit(f'error: anchor fg/bg ratio (--prior-images '
                 f'{args.prior_images}; 0 skips it): {e}')

    model = head = None
    if args.prior_images > 0:
        # the head must be one the prior estimator counts (checked before
        # the annotations are read), with the dataset's classes (checked
        # when the training set is built, before its statistics)
        from mmdet.registry import MODELS
        model = MODELS.build(cfg.model)
        try:
            _, head = find_dense_head(model)
        except ValueError as e:
            refuse(e)
    splits = [('train', 'train_dataloader')]
    if args.val:
        splits.append(('val', 'val_dataloader'))
    stats = {}
    for split, loader in splits:
        print(f'{split}: reading annotations')
        dataset_cfg = copy.deepcopy(cfg[loader].dataset)
        for d in find_datasets(dataset_cfg):
            # the whole set: mmdet's filter_empty_gt would hide the images
            # without annotations that this table counts
            d.pop('filter_cfg', None)
        dataset = DATASETS.build(dataset_cfg)
        if head is not None and split == 'train':
            try:
                check_num_classes(head, dataset)
            except ValueError as e:
                refuse(e)
        classes = dataset.metainfo['classes']
        stats[split] = compute_stats(collect_annotations(dataset), classes)
    anchors = {}
    if args.prior_images > 0:
        print(f'train: anchor fg/bg ratio on up to {args.prior_images} '
              'images')
        anchors['train'] = anchor_balance(cfg, args.prior_images, model)
    table = format_table(stats, anchors)
    out_dir = args.out_dir or osp.join(cfg.work_dir, 'dataset_stats')
    os.makedirs(out_dir, exist_ok=True)
    with open(osp.join(out_dir, 'stats.md'), 'w') as f:
        f.write(f'# Dataset statistics of {args.config}\n\n{table}\n')
    paths = plot_histograms(stats, out_dir)
    print(table)
    print('wrote ' + ', '.join([osp.join(out_dir, 'stats.md')] + paths))


if __name__ == '__main__':
    main()
